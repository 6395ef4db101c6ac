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
    /// With TLS: the directory holding ca.pem, server and client pairs.
    tls: Option<PathBuf>,
}

/// A CA, a server certificate for the members' addresses and a client
/// certificate, made with openssl in `dir`.
fn make_certificates(dir: &std::path::Path, addresses: &[String]) {
    let sans: Vec<String> = addresses.iter().map(|a| format!("IP:{a}")).collect();
    let script = format!(
        "set -e; cd {dir}
         openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=lab-ca -keyout ca-key.pem -out ca.pem 2>/dev/null
         for who in server client; do
           openssl req -newkey rsa:2048 -nodes -subj /CN=$who -keyout $who-key.pem -out $who.csr 2>/dev/null
           printf 'subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n' > $who.ext
           openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -extfile $who.ext -out $who.pem 2>/dev/null
         done",
        dir = dir.display(),
        sans = sans.join(",")
    );
    let status = Command::new("sh").arg("-c").arg(script).status().unwrap();
    assert!(status.success(), "making certificates");
}

impl EtcdCluster {
    /// Starts `size` members and points every lab host's config at them,
    /// with `extra_config` appended (e.g. an `[etcd]` section).
    pub fn start(lab: &Lab, size: usize, extra_config: &str) -> EtcdCluster {
        EtcdCluster::start_with(lab, size, extra_config, false)
    }

    /// Like `start`, with TLS on the client port (server certificate from a
    /// lab CA, client certificates required) when `tls` is set; the hosts'
    /// configs get `[etcd] ca`, `cert` and `key`.
    pub fn start_with(lab: &Lab, size: usize, extra_config: &str, tls: bool) -> EtcdCluster {
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
        let tls_dir = tls.then(|| {
            let tls_dir = dir.join("tls");
            std::fs::create_dir_all(&tls_dir).unwrap();
            let addresses: Vec<String> = members.iter().map(|(_, a)| a.clone()).collect();
            make_certificates(&tls_dir, &addresses);
            tls_dir
        });
        let scheme = if tls { "https" } else { "http" };
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            gw_ns: gw.clone(),
            dir: dir.clone(),
            tls: tls_dir.clone(),
        };
        for (name, address) in &members {
            let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
            let mut tls_args: Vec<String> = Vec::new();
            if let Some(t) = &tls_dir {
                tls_args = vec![
                    format!("--cert-file={}", t.join("server.pem").display()),
                    format!("--key-file={}", t.join("server-key.pem").display()),
                    format!("--trusted-ca-file={}", t.join("ca.pem").display()),
                    "--client-cert-auth".into(),
                ];
            }
            let child = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{gw}"))
                .arg("etcd")
                .args(["--name", name])
                .arg("--data-dir")
                .arg(dir.join(name))
                .args([
                    "--listen-client-urls",
                    &format!("{scheme}://{address}:2379"),
                    "--advertise-client-urls",
                    &format!("{scheme}://{address}:2379"),
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
                .args(&tls_args)
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
        let mut extra_config = extra_config.to_string();
        if let Some(t) = &tls_dir {
            extra_config.push_str(&format!(
                "[etcd]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                t.join("ca.pem").display(),
                t.join("client.pem").display(),
                t.join("client-key.pem").display()
            ));
        }
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
            .map(|m| {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}:2379", m.address)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `etcdctl ARGS` in the gateway's namespace against the running members.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let netns = format!("--net=/run/netns/{}", self.gw_ns);
        let endpoints = format!("--endpoints={}", self.endpoints());
        let mut all: Vec<String> = ["20", "nsenter", &netns, "etcdctl", &endpoints]
            .map(String::from)
            .to_vec();
        if let Some(t) = &self.tls {
            all.push(format!("--cacert={}", t.join("ca.pem").display()));
            all.push(format!("--cert={}", t.join("client.pem").display()));
            all.push(format!("--key={}", t.join("client-key.pem").display()));
        }
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
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

/// Allocates addresses from network `network` in the cluster as the
/// hooks of lab hosts do: `clients` threads, spread over `hosts`, each in
/// its host's network namespace with its own store connection, taking
/// `total` allocations between them (containers `c0`, `c1`, …). Each
/// allocation is tried up to `tries` times. Returns, per allocation, its
/// latency and its outcome (the address, or every error it met).
pub fn allocate_concurrently(
    lab: &Lab,
    hosts: &[&str],
    network: &str,
    clients: usize,
    total: usize,
    tries: usize,
    during: impl FnOnce(&std::sync::atomic::AtomicUsize),
) -> Vec<Allocation> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for client in 0..clients {
            let host = hosts[client % hosts.len()].to_string();
            let (next, done, results) = (&next, &done, &results);
            let config_path = lab.config_path(&host);
            let netns = format!("/run/netns/{}", lab.ns(&host));
            scope.spawn(move || {
                // Sockets are made in the namespace of the thread that opens them.
                let file = std::fs::File::open(&netns).unwrap();
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let config = macvlan_runc::config::Config::load(&config_path, true).unwrap();
                let keys = macvlan_runc::store::Keys::new(&config.store_prefix);
                let store = macvlan_runc::store::open(&config).expect("connect to etcd");
                let (vlan, stored) =
                    macvlan_runc::network::load_stored(store.as_ref(), &keys, network).unwrap();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= total {
                        break;
                    }
                    let id = format!("c{n}");
                    let record = record_for(&vlan, &host);
                    let started = Instant::now();
                    let mut errors = Vec::new();
                    let mut address = None;
                    for _ in 0..tries {
                        match macvlan_runc::network::claim(
                            store.as_ref(),
                            &keys,
                            &id,
                            (&vlan, &stored),
                            Default::default(),
                            Default::default(),
                            &record,
                        ) {
                            Ok(claimed) => {
                                address = claimed.v4.map(|cidr| cidr.address);
                                break;
                            }
                            Err(e) => {
                                errors.push(e.to_string());
                                std::thread::sleep(Duration::from_millis(200));
                            }
                        }
                    }
                    results.lock().unwrap().push(Allocation {
                        container: id,
                        latency: started.elapsed(),
                        address,
                        errors,
                    });
                    done.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        during(&done);
    });
    results.into_inner().unwrap()
}

pub struct Allocation {
    pub container: String,
    pub latency: Duration,
    pub address: Option<std::net::Ipv4Addr>,
    pub errors: Vec<String>,
}

fn record_for(
    network: &macvlan_runc::network::Network,
    host: &str,
) -> macvlan_runc::record::FlatRecord {
    macvlan_runc::record::FlatRecord {
        ip: network.subnet.clone().unwrap_or_default(),
        gateway: network.gateway.map(|g| g.to_string()),
        ip6: None,
        gateway6: None,
        host_interface: network.link_parent(),
        mac: "02:00:00:00:00:01".into(),
        mtu: None,
        mode: macvlan_runc::netlink::MacvlanMode::Bridge,
        host: host.to_string(),
        host_id: Some(format!("{host}-id")),
        network: Some(network.name.clone()),
        state: macvlan_runc::record::State::Attaching,
        pool: network.pool(),
        ifname: None,
        pid: None,
        created_at: 0,
        updated_at: 0,
        stopped_at: None,
        egress: None,
        ingress: None,
        vlan: network.vlan.map(|id| macvlan_runc::record::VlanRef {
            name: network.name.clone(),
            id,
        }),
        client_id: None,
        lease: None,
        lease6: None,
        netns_inode: None,
        client_pid: None,
        host_route: None,
        lease_pending: false,
        boot_id: None,
        resolv_conf: None,
        cni: None,
    }
}
