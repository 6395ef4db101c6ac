//! The lab of DESIGN.md §4: a switch, lab hosts and a gateway, each in a
//! network namespace of its own, with runc running inside a lab host's
//! namespace. Everything is removed in `Drop`, which also runs on panic.
#![allow(dead_code)]

pub mod dhcp_server;
pub mod docker;
pub mod etcd;
pub mod guest;
pub mod podman;
pub mod rogue_dhcp;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};

pub const MACVLAN: &str = env!("CARGO_BIN_EXE_macvlan");
pub const MACVLAN_RUNC: &str = env!("CARGO_BIN_EXE_macvlan-runc");
/// The lab uplink of every host: the parent interface containers use.
pub const UPLINK: &str = "lan0";
pub const GATEWAY: &str = "192.0.2.1";
/// The registrar's TTL in lab configs: short, so that tests can watch
/// endpoints expire.
pub const DISCOVERY_TTL_S: u64 = 3;
/// A daemon a hook started exits after this long with nothing to do.
pub const DAEMON_IDLE_EXIT_S: u64 = 4;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Polls until `done` holds; returns how long it took, or panics after `limit`.
pub fn wait_for(
    limit: std::time::Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    started.elapsed()
}

/// Runs a command; panics with its output if it cannot be started.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs a command and panics unless it succeeds; returns stdout.
pub fn must(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The original system's environment for a flat network on the lab uplink.
pub fn flat_env(ip: &str) -> Vec<String> {
    vec![
        "TYPE=flat".into(),
        format!("HOSTIF={UPLINK}"),
        format!("IP={ip}"),
        format!("GW={GATEWAY}"),
    ]
}

pub fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// (address/prefix, MAC) of `eth0` inside a container, through an engine's
/// `exec` (`run(&["exec", name, …])` returns stdout).
pub fn eth0_inside(name: &str, run: impl Fn(&[&str]) -> String) -> (String, String) {
    let address = run(&["exec", name, "ip", "-o", "-4", "addr", "show", "eth0"]);
    let mac = run(&["exec", name, "cat", "/sys/class/net/eth0/address"]);
    let cidr = address.split_whitespace().nth(3).unwrap_or("").to_string();
    (cidr, mac)
}

/// One test's topology and its files.
pub struct Lab {
    /// Unique per test run: `mv<pid>x<n>`.
    pub name: String,
    pub dir: tempfile::TempDir,
    pub hosts: Vec<String>,
    namespaces: Vec<String>,
    pub rootfs: PathBuf,
    template: Value,
}

impl Lab {
    /// A switch, the given lab hosts (each with uplink `lan0` on the
    /// switch) and a gateway holding 192.0.2.1/24.
    pub fn new(hosts: &[&str]) -> Lab {
        let name = format!(
            "mv{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .expect("tempdir");
        let mut lab = Lab {
            name,
            dir,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            namespaces: Vec::new(),
            rootfs: PathBuf::new(),
            template: Value::Null,
        };
        lab.build();
        lab
    }

    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.name)
    }

    fn add_ns(&mut self, node: &str) {
        let ns = self.ns(node);
        must("ip", &["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        must("ip", &["-n", &ns, "link", "set", "lo", "up"]);
    }

    fn build(&mut self) {
        self.add_ns("sw");
        let sw = self.ns("sw");
        must("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        must("ip", &["-n", &sw, "link", "set", "br0", "up"]);
        let mut nodes: Vec<String> = self.hosts.clone();
        nodes.push("gw".into());
        for (i, node) in nodes.iter().enumerate() {
            self.add_ns(node);
            let ns = self.ns(node);
            let port = format!("p{i}");
            // Both ends are created inside lab namespaces: nothing ever
            // appears in the machine's own namespace.
            must(
                "ip",
                &[
                    "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", UPLINK,
                    "netns", &ns,
                ],
            );
            must(
                "ip",
                &["-n", &sw, "link", "set", &port, "master", "br0", "up"],
            );
            must("ip", &["-n", &ns, "link", "set", UPLINK, "up"]);
        }
        must(
            "ip",
            &[
                "-n",
                &self.ns("gw"),
                "addr",
                "add",
                &format!("{GATEWAY}/24"),
                "dev",
                UPLINK,
            ],
        );
        for host in self.hosts.clone() {
            std::fs::write(
                self.config_path(&host),
                format!(
                    "store = \"sqlite://{}\"\nlog = \"{}\"\nhost_name = \"{host}\"\n\
                     host_id = \"{host}-id\"\n\
                     [policy]\nallow_adhoc = true\n\
                     [gc]\ncontainer_dirs = [\"{}\"]\n\
                     [daemon]\nruntime_dir = \"{}\"\nidle_exit = \"{DAEMON_IDLE_EXIT_S}s\"\n\
                     [discovery]\nttl = \"{DISCOVERY_TTL_S}s\"\n",
                    self.dir.path().join(format!("state-{host}.db")).display(),
                    self.log_path(&host).display(),
                    self.runc_root().display(),
                    self.daemon_dir(&host).display(),
                ),
            )
            .unwrap();
        }
        self.make_rootfs();
    }

    fn make_rootfs(&mut self) {
        let rootfs = self.dir.path().join("rootfs");
        for sub in ["bin", "proc", "sys", "dev", "tmp", "etc", "www"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("busybox-static installed");
        for applet in [
            "sh", "ip", "ping", "sleep", "cat", "ifconfig", "wget", "httpd", "nc", "nslookup",
            "echo", "ls", "true",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        self.rootfs = rootfs;
        let spec_dir = self.dir.path().join("spec");
        std::fs::create_dir_all(&spec_dir).unwrap();
        must("runc", &["spec", "--bundle", spec_dir.to_str().unwrap()]);
        let mut template: Value =
            serde_json::from_str(&std::fs::read_to_string(spec_dir.join("config.json")).unwrap())
                .unwrap();
        template["root"] = json!({"path": self.rootfs, "readonly": true});
        template["process"]["terminal"] = json!(false);
        template["process"]["args"] = json!(["sleep", "100000"]);
        // busybox ping needs a raw socket.
        for set in ["bounding", "effective", "permitted"] {
            if let Some(caps) = template["process"]["capabilities"][set].as_array_mut() {
                caps.push(json!("CAP_NET_RAW"));
            }
        }
        self.template = template;
    }

    /// A rootfs whose programs resolve names: Debian's dynamic busybox
    /// (fetched by scripts/setup.sh) with its libraries, and a resolv.conf
    /// pointing at `nameserver` with search domain `search`.
    pub fn resolving_rootfs(&self, nameserver: &str, search: &str) -> PathBuf {
        let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-assets");
        let deb = std::fs::read_dir(&assets)
            .ok()
            .and_then(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .find(|p| p.to_string_lossy().contains("busybox_"))
            })
            .expect("the busybox .deb in target/test-assets (scripts/setup.sh fetches it)");
        let rootfs = self.dir.path().join("rootfs-resolving");
        must(
            "dpkg-deb",
            &["-x", deb.to_str().unwrap(), rootfs.to_str().unwrap()],
        );
        let binary = rootfs.join("bin/busybox");
        let ldd = must("ldd", &[binary.to_str().unwrap()]);
        for library in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
            let target = rootfs.join(library.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(library, &target).unwrap();
        }
        for sub in ["proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        for applet in ["sh", "wget", "nslookup", "sleep", "cat"] {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
        std::fs::write(
            rootfs.join("etc/resolv.conf"),
            format!("nameserver {nameserver}\nsearch {search}\n"),
        )
        .unwrap();
        std::fs::write(rootfs.join("etc/nsswitch.conf"), "hosts: files dns\n").unwrap();
        std::fs::write(rootfs.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        rootfs
    }

    pub fn config_path(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("config-{host}.toml"))
    }

    /// Where the host's `macvlan daemon` keeps its lock and pid file.
    pub fn daemon_dir(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("run-{host}"))
    }

    /// The pid of the host's running `macvlan daemon`, if one runs.
    pub fn daemon_pid(&self, host: &str) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.daemon_dir(host).join("daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        std::path::Path::new(&format!("/proc/{pid}"))
            .exists()
            .then_some(pid)
    }

    pub fn log_path(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("macvlan-{host}.log"))
    }

    pub fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc")
    }

    /// A container id unique to this lab (runc's default cgroup path is the id).
    pub fn id(&self, short: &str) -> String {
        format!("{}-{short}", self.name)
    }

    /// Writes a bundle for container `id` on `host` with our hooks, the
    /// given environment and annotations; returns the bundle path.
    pub fn bundle(
        &self,
        host: &str,
        id: &str,
        env: &[&str],
        annotations: &[(&str, &str)],
    ) -> PathBuf {
        let mut config = self.template.clone();
        let bundle = self.dir.path().join("bundles").join(id);
        std::fs::create_dir_all(&bundle).unwrap();
        if let Some(list) = config["process"]["env"].as_array_mut() {
            list.extend(env.iter().map(|e| json!(e)));
        }
        let annotations: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        config["annotations"] = Value::Object(annotations);
        let cfg = self.config_path(host);
        let cfg = cfg.to_str().unwrap();
        config["hooks"] = json!({
            "createRuntime": [{"path": MACVLAN, "args": ["macvlan", "--config", cfg, "hook", "createRuntime"]}],
            "poststop": [{"path": MACVLAN, "args": ["macvlan", "--config", cfg, "hook", "poststop"]}],
        });
        self.write_config(&bundle, &config);
        bundle
    }

    pub fn write_config(&self, bundle: &Path, config: &Value) {
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(config).unwrap(),
        )
        .unwrap();
    }

    pub fn read_config(&self, bundle: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap()
    }

    /// `runc` run inside a lab host's namespace (nsenter, not `ip netns
    /// exec`, which remounts /sys and breaks runc's cgroup lookup).
    pub fn runc(&self, host: &str, args: &[&str]) -> Output {
        let netns = format!("--net=/run/netns/{}", self.ns(host));
        let root = self.runc_root();
        let mut all = vec![
            "60",
            "nsenter",
            netns.as_str(),
            "runc",
            "--root",
            root.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        run("timeout", &all)
    }

    /// `runc create` + `runc start`; Err carries runc's output.
    pub fn start(&self, host: &str, id: &str, bundle: &Path) -> Result<(), String> {
        self.start_with(host, id, bundle, &["runc"])
    }

    /// `create` + `start` through the `macvlan-runc` wrapper (with this
    /// host's config file), exactly as an engine would call it.
    pub fn start_wrapped(&self, host: &str, id: &str, bundle: &Path) -> Result<(), String> {
        let cfg = self.config_path(host);
        self.start_with(
            host,
            id,
            bundle,
            &[MACVLAN_RUNC, "--macvlan-config", cfg.to_str().unwrap()],
        )
    }

    fn start_with(
        &self,
        host: &str,
        id: &str,
        bundle: &Path,
        runtime: &[&str],
    ) -> Result<(), String> {
        // Without a terminal the container inherits runc's stdio: a pipe
        // would stay open as long as the container runs, so use a file.
        let output_path = bundle.join("runc-create.out");
        let output = std::fs::File::create(&output_path).unwrap();
        let status = Command::new("timeout")
            .args([
                "60",
                "nsenter",
                &format!("--net=/run/netns/{}", self.ns(host)),
            ])
            .args(runtime)
            .arg("--root")
            .arg(self.runc_root())
            .args(["create", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .status()
            .expect("run runc create");
        if !status.success() {
            return Err(std::fs::read_to_string(&output_path).unwrap_or_default());
        }
        let out = self.runc(host, &["start", id]);
        if !out.status.success() {
            return Err(text(&out));
        }
        Ok(())
    }

    /// `macvlan-runc ARGS` in the host's namespace, with this host's config.
    pub fn wrapper(&self, host: &str, args: &[&str]) -> Output {
        let netns = format!("--net=/run/netns/{}", self.ns(host));
        let cfg = self.config_path(host);
        let mut all = vec![
            "60",
            "nsenter",
            netns.as_str(),
            MACVLAN_RUNC,
            "--macvlan-config",
            cfg.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        run("timeout", &all)
    }

    /// A bundle like [`Lab::bundle`] but without hooks: what an engine hands
    /// the runtime.
    pub fn bundle_without_hooks(
        &self,
        host: &str,
        id: &str,
        env: &[&str],
        annotations: &[(&str, &str)],
    ) -> PathBuf {
        let bundle = self.bundle(host, id, env, annotations);
        let mut config = self.read_config(&bundle);
        config.as_object_mut().unwrap().remove("hooks");
        self.write_config(&bundle, &config);
        bundle
    }

    /// Starts containers `ids` on `host` all at once, each asking with `env`.
    pub fn start_at_once(&self, host: &str, ids: &[String], env: &[&str]) {
        std::thread::scope(|scope| {
            for id in ids {
                scope.spawn(move || {
                    let bundle = self.bundle(host, id, env, &[]);
                    self.start(host, id, &bundle).unwrap();
                });
            }
        });
    }

    /// Stops and deletes a container (poststop runs).
    pub fn stop(&self, host: &str, id: &str) {
        let out = self.runc(host, &["delete", "--force", id]);
        assert!(out.status.success(), "runc delete {id}: {}", text(&out));
    }

    pub fn exec(&self, host: &str, id: &str, command: &[&str]) -> Output {
        let mut args = vec!["exec", id];
        args.extend_from_slice(command);
        self.runc(host, &args)
    }

    pub fn pid(&self, host: &str, id: &str) -> u32 {
        let out = self.runc(host, &["state", id]);
        let state: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("runc state {id}: {}", text(&out)));
        state["pid"].as_u64().expect("pid") as u32
    }

    /// `ip -j addr` inside the container, as JSON.
    pub fn container_addresses(&self, host: &str, id: &str) -> Value {
        let pid = self.pid(host, id);
        let out = must(
            "nsenter",
            &[
                &format!("--net=/proc/{pid}/ns/net"),
                "ip",
                "-j",
                "addr",
                "show",
            ],
        );
        serde_json::from_str(&out).unwrap()
    }

    /// (ifname, mac, ipv4 CIDRs) of a container's interfaces other than lo.
    pub fn container_interfaces(&self, host: &str, id: &str) -> Vec<(String, String, Vec<String>)> {
        let value = self.container_addresses(host, id);
        value
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["ifname"] != "lo")
            .map(|l| {
                let addrs = l["addr_info"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|a| a["family"] == "inet")
                    .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
                    .collect();
                (
                    l["ifname"].as_str().unwrap().to_string(),
                    l["address"].as_str().unwrap_or("").to_string(),
                    addrs,
                )
            })
            .collect()
    }

    pub fn default_route(&self, host: &str, id: &str) -> String {
        let pid = self.pid(host, id);
        must(
            "nsenter",
            &[
                &format!("--net=/proc/{pid}/ns/net"),
                "ip",
                "route",
                "show",
                "default",
            ],
        )
    }

    /// Names of the links in a lab namespace.
    pub fn links(&self, node: &str) -> Vec<String> {
        let out = must("ip", &["-n", &self.ns(node), "-j", "link", "show"]);
        let value: Value = serde_json::from_str(&out).unwrap();
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    /// `macvlan --config <host's> ARGS` in the host's namespace.
    pub fn macvlan(&self, host: &str, args: &[&str]) -> Output {
        let netns = format!("--net=/run/netns/{}", self.ns(host));
        let cfg = self.config_path(host);
        let mut all = vec![
            "30",
            "nsenter",
            netns.as_str(),
            MACVLAN,
            "--config",
            cfg.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        run("timeout", &all)
    }

    /// Starts container `id` on `host` with `env`, serving /www (the
    /// rootfs's) with busybox httpd on port 8000.
    pub fn start_web(&self, host: &str, id: &str, env: &[&str]) {
        let bundle = self.bundle(host, id, env, &[]);
        let mut config = self.read_config(&bundle);
        config["process"]["args"] = json!(["sh", "-c", "httpd -p 8000 -h /www; exec sleep 100000"]);
        self.write_config(&bundle, &config);
        self.start(host, id, &bundle).unwrap();
    }

    /// `program ARGS` started in `node`'s namespace, killed on drop.
    pub fn spawn(&self, node: &str, program: &str, args: &[&str]) -> Spawned {
        Spawned(
            Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", self.ns(node)))
                .arg(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {program}: {e}")),
        )
    }

    /// `macvlan --config <config_host's> ARGS` started in `node`'s
    /// namespace (a daemon, a DNS responder), killed on drop.
    pub fn spawn_macvlan(&self, node: &str, config_host: &str, args: &[&str]) -> Spawned {
        let config = self.config_path(config_host);
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        self.spawn(node, MACVLAN, &all)
    }

    /// `macvlan ARGS` as [`Lab::macvlan`], with `env` set.
    pub fn macvlan_env(&self, host: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
        let netns = format!("--net=/run/netns/{}", self.ns(host));
        let cfg = self.config_path(host);
        let mut command = Command::new("timeout");
        command
            .args(["30", "nsenter", &netns, MACVLAN, "--config"])
            .arg(&cfg)
            .args(args)
            .stdin(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().expect("run macvlan")
    }

    /// The gateway's IPv6 side: 2001:db8:1::1/64 on the lab LAN and the
    /// link-local fe80::1 routers usually advertise from (both without
    /// DAD); it learns neighbours from announcements alone (arp_accept,
    /// accept_untracked_na), so tests can see them.
    pub fn add_gateway_ipv6(&self) {
        let gw = self.ns("gw");
        for cidr in ["2001:db8:1::1/64", "fe80::1/64"] {
            must(
                "ip",
                &["-n", &gw, "addr", "add", cidr, "dev", UPLINK, "nodad"],
            );
        }
        for (key, value) in [
            (format!("net.ipv4.conf.{UPLINK}.arp_accept"), "1"),
            (format!("net.ipv6.conf.{UPLINK}.accept_untracked_na"), "1"),
        ] {
            must(
                "ip",
                &[
                    "netns",
                    "exec",
                    &gw,
                    "sysctl",
                    "-q",
                    "-w",
                    &format!("{key}={value}"),
                ],
            );
        }
    }

    /// Moves attachment `id`'s lease renewals (DHCPv4 and DHCPv6) on
    /// `host` to now, as if T1 had come: its daemon renews within a round.
    pub fn renew_now(&self, host: &str, id: &str) {
        let path = self.dir.path().join(format!("state-{host}.db"));
        let store = macvlan_runc::store::SqliteStore::open(&path).unwrap();
        let keys = macvlan_runc::store::Keys::new("/macvlan");
        let now = macvlan_runc::record::now();
        macvlan_runc::ipam::update_flat(&store, &keys, id, |r| {
            if let Some(lease) = r.lease.as_mut() {
                lease.renew_at = now;
            }
            if let Some(lease) = r.lease6.as_mut() {
                lease.renew_at = now;
            }
            true
        })
        .unwrap()
        .expect("the record");
    }

    /// Gives lab node `host` (a lab host, or `gw`) an address (CIDR) on its
    /// uplink — for a host, the parent of its containers.
    pub fn add_host_address(&self, host: &str, cidr: &str) {
        must(
            "ip",
            &["-n", &self.ns(host), "addr", "add", cidr, "dev", UPLINK],
        );
    }

    /// `macvlan network create lan` on `host` for the lab's LAN: subnet
    /// 192.0.2.0/24, gateway 192.0.2.1, addresses from 192.0.2.64/28 (unless
    /// `extra` gives another `--ip-range`), and `extra` options.
    pub fn create_lan(&self, host: &str, extra: &[&str]) {
        let mut args = vec![
            "network",
            "create",
            "lan",
            "--parent",
            UPLINK,
            "--subnet",
            "192.0.2.0/24",
            "--gateway",
            GATEWAY,
        ];
        if !extra.contains(&"--ip-range") {
            args.extend(["--ip-range", "192.0.2.64/28"]);
        }
        args.extend_from_slice(extra);
        let out = self.macvlan(host, &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }

    /// The host's store records, via `macvlan ls --json`.
    pub fn records(&self, host: &str) -> Vec<Value> {
        let out = self.macvlan(host, &["ls", "--json"]);
        assert!(out.status.success(), "macvlan ls: {}", text(&out));
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Every key in the host's SQLite store, read directly, but the
    /// keyspace's schema version (which every opened store has).
    pub fn store_keys(&self, host: &str) -> Vec<String> {
        let path = self.dir.path().join(format!("state-{host}.db"));
        if !path.exists() {
            return Vec::new();
        }
        let connection = rusqlite::Connection::open(path).unwrap();
        let mut statement = connection
            .prepare("SELECT key FROM kv ORDER BY key")
            .unwrap();
        let keys = statement
            .query_map([], |row| row.get::<_, String>(0))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        keys.into_iter()
            .filter(|k| k != "/macvlan/schema")
            .collect()
    }

    /// Starts `sleep` in a network namespace of its own, from inside the
    /// lab host's namespace, and returns once it is there (it passes through
    /// the test's namespace and the host's first).
    pub fn netns_process(&self, host: &str) -> NetnsProcess {
        let host_ns = self.netns_inode(host);
        let own = namespace_inode("/proc/self/ns/net");
        self.spawn_in(host, &["unshare", "--net", "sleep", "120"], |ns| {
            ns != own && ns != host_ns
        })
    }

    /// Like `netns_process`, for benchmarks that outlast two minutes.
    pub fn long_netns_process(&self, host: &str) -> NetnsProcess {
        let host_ns = self.netns_inode(host);
        let own = namespace_inode("/proc/self/ns/net");
        self.spawn_in(host, &["unshare", "--net", "sleep", "7200"], |ns| {
            ns != own && ns != host_ns
        })
    }

    /// Starts `sleep` inside the lab host's own namespace (like a container
    /// that shares the host's network) and returns once it is there.
    pub fn host_process(&self, host: &str) -> NetnsProcess {
        let host_ns = self.netns_inode(host);
        self.spawn_in(host, &["sleep", "7200"], |ns| ns == host_ns)
    }

    fn netns_inode(&self, host: &str) -> u64 {
        namespace_inode(&format!("/run/netns/{}", self.ns(host)))
    }

    /// Runs `command` under `nsenter` into the host's namespace and waits
    /// until the process's namespace satisfies `arrived`.
    fn spawn_in(
        &self,
        host: &str,
        command: &[&str],
        arrived: impl Fn(u64) -> bool,
    ) -> NetnsProcess {
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns(host)))
            .args(command)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let process = NetnsProcess { child };
        let pid = process.pid();
        for _ in 0..250 {
            let path = format!("/proc/{pid}/ns/net");
            if std::fs::metadata(&path).is_ok() && arrived(namespace_inode(&path)) {
                return process;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("process {pid} never reached the expected network namespace");
    }

    pub fn log(&self, host: &str) -> String {
        std::fs::read_to_string(self.log_path(host)).unwrap_or_default()
    }

    /// Pings `address` from inside container `id`.
    pub fn ping(&self, host: &str, id: &str, address: &str) -> bool {
        self.exec(host, id, &["ping", "-c", "3", "-W", "3", address])
            .status
            .success()
    }
}

fn namespace_inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0)
}

/// A process with a network namespace of its own, killed on drop.
/// A process the test started in a lab namespace, killed by its pid on
/// drop (also on panic).
pub struct Spawned(pub std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct NetnsProcess {
    child: std::process::Child,
}

impl NetnsProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `--net=/proc/<pid>/ns/net`, for nsenter.
    pub fn nsenter_arg(&self) -> String {
        format!("--net=/proc/{}/ns/net", self.pid())
    }
}

impl Drop for NetnsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let root = self.runc_root();
        if root.exists() {
            let out = run("runc", &["--root", root.to_str().unwrap(), "list", "-q"]);
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let host = self.hosts.first().cloned().unwrap_or_default();
                let _ = self.runc(&host, &["delete", "--force", id]);
            }
        }
        // Daemons a hook started for this lab, by the pid they wrote.
        for host in &self.hosts {
            if let Some(pid) = self.daemon_pid(host) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for ns in self.namespaces.iter().rev() {
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}
