//! An etcd cluster (Debian's etcd 3.4) inside a lab: its members listen on
//! addresses of the gateway namespace, which the lab hosts reach over the
//! lab switch; the hosts' configurations point at it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{must, run, text, Lab, UPLINK};

/// The management subnet: etcd members at .1, .2, …; lab hosts at .10, .11, ….
pub const MANAGEMENT_PREFIX: &str = "198.51.100";

pub struct Member {
    pub name: String,
    pub address: String,
    child: Option<Child>,
}

impl Member {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    gw_ns: String,
    pub dir: PathBuf,
}

impl EtcdCluster {
    /// Starts `size` members and points every lab host's config at them,
    /// with `extra_config` appended (e.g. an `[etcd]` section).
    pub fn start(lab: &Lab, size: usize, extra_config: &str) -> EtcdCluster {
        let gw = lab.ns("gw");
        let dir = lab.dir.path().join("etcd");
        std::fs::create_dir_all(&dir).unwrap();
        let members: Vec<(String, String)> = (1..=size)
            .map(|i| (format!("n{i}"), format!("{MANAGEMENT_PREFIX}.{i}")))
            .collect();
        for (_, address) in &members {
            must(
                "ip",
                &[
                    "-n",
                    &gw,
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "dev",
                    UPLINK,
                ],
            );
        }
        for (i, host) in lab.hosts.iter().enumerate() {
            must(
                "ip",
                &[
                    "-n",
                    &lab.ns(host),
                    "addr",
                    "add",
                    &format!("{MANAGEMENT_PREFIX}.{}/24", 10 + i),
                    "dev",
                    UPLINK,
                ],
            );
        }
        let initial: Vec<String> = members
            .iter()
            .map(|(name, address)| format!("{name}=http://{address}:2380"))
            .collect();
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            gw_ns: gw.clone(),
            dir: dir.clone(),
        };
        for (name, address) in &members {
            let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
            let child = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{gw}"))
                .arg("etcd")
                .args(["--name", name])
                .arg("--data-dir")
                .arg(dir.join(name))
                .args([
                    "--listen-client-urls",
                    &format!("http://{address}:2379"),
                    "--advertise-client-urls",
                    &format!("http://{address}:2379"),
                    "--listen-peer-urls",
                    &format!("http://{address}:2380"),
                    "--initial-advertise-peer-urls",
                    &format!("http://{address}:2380"),
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    &lab.name,
                    "--heartbeat-interval",
                    "100",
                    "--election-timeout",
                    "1000",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start etcd (Debian etcd-server)");
            cluster.members.push(Member {
                name: name.clone(),
                address: address.clone(),
                child: Some(child),
            });
        }
        let store = format!(
            "etcd://{}",
            members
                .iter()
                .map(|(_, a)| format!("{a}:2379"))
                .collect::<Vec<_>>()
                .join(",")
        );
        for host in &lab.hosts {
            let path = lab.config_path(host);
            let config = std::fs::read_to_string(&path).unwrap();
            let config: String = config
                .lines()
                .filter(|l| !l.starts_with("store = "))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(
                &path,
                format!("store = \"{store}\"\n{config}{extra_config}"),
            )
            .unwrap();
        }
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// The client endpoints of the members still running.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("http://{}:2379", m.address))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `etcdctl ARGS` in the gateway's namespace against the running members.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let netns = format!("--net=/run/netns/{}", self.gw_ns);
        let endpoints = format!("--endpoints={}", self.endpoints());
        let mut all = vec!["20", "nsenter", &netns, "etcdctl", &endpoints];
        all.extend_from_slice(args);
        run("timeout", &all)
    }

    pub fn wait_healthy(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            let out = self.etcdctl(&["endpoint", "health"]);
            if out.status.success() {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "etcd not healthy: {}",
                text(&out)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every key under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.etcdctl(&["get", "--prefix", "--keys-only", prefix]);
        assert!(out.status.success(), "etcdctl get: {}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The name of the current leader.
    pub fn leader(&self) -> String {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let statuses: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("endpoint status: {}", text(&out)));
        let status = statuses.as_array().unwrap();
        let leader_id = status[0]["Status"]["leader"].as_u64().unwrap();
        let endpoint = status
            .iter()
            .find(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader_id))
            .expect("the leader among the endpoints")["Endpoint"]
            .as_str()
            .unwrap()
            .to_string();
        self.members
            .iter()
            .find(|m| endpoint.contains(&m.address))
            .unwrap()
            .name
            .clone()
    }

    /// Kills a member by its process id.
    pub fn kill(&mut self, name: &str) {
        let member = self.members.iter_mut().find(|m| m.name == name).unwrap();
        if let Some(mut child) = member.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
