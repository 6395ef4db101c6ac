//! Attach/detach time of the macvlan hook against the CNI macvlan plugin with
//! host-local IPAM, side by side on one lab, each invoked as a process per
//! container. Writes `bench-results/attach.md`.
//!
//! `cargo bench --bench attach -- [--containers N] [--out DIR] [--baseline
//! BIN]` (default 200 containers, `bench-results/`), as root. Two requests
//! are timed: ad hoc with a static address (the thesis's), and naming a
//! network with the address allocated from its range. Each round also runs
//! a block — the same ad-hoc attach, network attach, poststop and no-op
//! hook — for this binary doing the work itself, for the same with a
//! running `macvlan daemon` taking the hooks over, and with `--baseline BIN`
//! for BIN, in turn, each with a store of the same networks; the report
//! ends with them above the `/bin/true` floor.
//! IPv6: a dual-stack network's attach beside the IPv4-only one, the CNI
//! plugin with static IPv6 (host-local), and the time to an address by
//! SLAAC and by DHCPv6 against dnsmasq on the lab gateway.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{ms, timed, Series};

const MACVLAN: &str = env!("CARGO_BIN_EXE_macvlan");
const CNI_MACVLAN: &str = "/usr/lib/cni/macvlan";
const WRAPPER: &str = env!("CARGO_BIN_EXE_macvlan-runc");

fn sh(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .expect("run");
    assert!(status.success(), "{args:?} failed");
}

/// A process with a network namespace of its own, standing in for a container.
fn container() -> Child {
    let mut child = Command::new("unshare")
        .args(["--net", "sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .expect("unshare");
    let own = std::fs::metadata("/proc/self/ns/net").unwrap();
    use std::os::unix::fs::MetadataExt;
    for _ in 0..500 {
        if let Ok(m) = std::fs::metadata(format!("/proc/{}/ns/net", child.id())) {
            if m.ino() != own.ino() {
                return child;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("unshare did not create a namespace");
}

/// One binary's part of the before/after comparison.
#[derive(Default)]
struct Block {
    adhoc: Series,
    network: Series,
    poststop: Series,
    noop: Series,
}

struct Lab {
    name: String,
}

/// A server the benchmark started, killed on drop (also on a panic).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for node in ["host", "gw", "sw"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("{}-{node}", self.name)])
                .status();
        }
    }
}

/// A config file `DIR/NAME.toml` for one way of running the hook: a store,
/// a log and a runtime directory of its own, ad-hoc requests allowed, a
/// daemon started on demand gone after 2 s idle.
fn config_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "store = \"sqlite://{}\"\nlog = \"{}\"\n[policy]\nallow_adhoc = true\n\
             [daemon]\nruntime_dir = \"{}\"\nidle_exit = \"2s\"\n",
            dir.join(format!("{name}.db")).display(),
            dir.join(format!("{name}.log")).display(),
            dir.join(format!("{name}-run")).display()
        ),
    )
    .unwrap();
    path
}

/// `BINARY --config CONFIG network create NAME --parent lan0 ARGS`, which
/// must succeed.
fn create_network<S: AsRef<std::ffi::OsStr>>(binary: &Path, config: &Path, name: &str, args: &[S]) {
    let status = Command::new(binary)
        .args(["--config", config.to_str().unwrap()])
        .args(["network", "create", name, "--parent", "lan0"])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{}: network create {name}",
        config.display()
    );
}

/// The main store's networks in another store (the baseline binary's, the
/// daemon's), on other subnets: `bench` and `bench-ha` as 198.18.`v4`.0/24,
/// `bench6` as `dual` with 2001:db8:`v6`::/64, `slaac6` and `dhcp6` as
/// 2001:db8:`v6 + 2`:: and `v6 + 3`::.
fn mirror_networks(binary: &Path, config: &Path, v4: [u8; 2], dual: &str, v6: u16) {
    let prefix6 = |n: u16| format!("2001:db8:{n:x}::/64");
    let flat = |third: u8| {
        vec![
            "--subnet".to_string(),
            format!("198.18.{third}.0/24"),
            "--gateway".to_string(),
            format!("198.18.{third}.1"),
        ]
    };
    let mut host_access = flat(v4[1]);
    host_access.push("--host-access".into());
    let networks = [
        ("bench", flat(v4[0])),
        ("bench-ha", host_access),
        (
            "bench6",
            vec![
                "--subnet".into(),
                dual.into(),
                "--subnet6".into(),
                prefix6(v6),
            ],
        ),
        (
            "slaac6",
            vec![
                "--ipv6".into(),
                "slaac".into(),
                "--subnet6".into(),
                prefix6(v6 + 2),
            ],
        ),
        (
            "dhcp6",
            vec![
                "--ipv6".into(),
                "dhcpv6".into(),
                "--subnet6".into(),
                prefix6(v6 + 3),
            ],
        ),
    ];
    for (name, args) in networks {
        create_network(binary, config, name, &args);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let baseline = support::argument(&args, "--baseline").map(PathBuf::from);
    let containers: usize = args
        .iter()
        .position(|a| a == "--containers")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let out_dir = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-results"));
    std::fs::create_dir_all(&out_dir).unwrap();
    assert!(
        Path::new(CNI_MACVLAN).exists(),
        "install containernetworking-plugins"
    );

    let lab = Lab {
        name: format!("mvb{}", std::process::id()),
    };
    let ns = |node: &str| format!("{}-{node}", lab.name);
    for node in ["sw", "host", "gw"] {
        sh(&["ip", "netns", "add", &ns(node)]);
    }
    sh(&[
        "ip",
        "-n",
        &ns("sw"),
        "link",
        "add",
        "br0",
        "type",
        "bridge",
    ]);
    sh(&["ip", "-n", &ns("sw"), "link", "set", "br0", "up"]);
    for node in ["host", "gw"] {
        let port = format!("p-{node}");
        sh(&[
            "ip",
            "-n",
            &ns("sw"),
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "lan0",
            "netns",
            &ns(node),
        ]);
        sh(&[
            "ip",
            "-n",
            &ns("sw"),
            "link",
            "set",
            &port,
            "master",
            "br0",
            "up",
        ]);
        sh(&["ip", "-n", &ns(node), "link", "set", "lan0", "up"]);
    }

    // The benchmark itself moves into the lab host's namespace (it is a
    // single-threaded program), so both tools run with identical conditions.
    let host_ns = std::fs::File::open(format!("/run/netns/{}", ns("host"))).unwrap();
    nix::sched::setns(&host_ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");

    let work = tempfile::tempdir().unwrap();
    let config = config_file(work.path(), "main");
    let create =
        |name: &str, args: &[&str]| create_network(Path::new(MACVLAN), &config, name, args);
    // Dual stack beside the IPv4-only `bench`; SLAAC and DHCPv6 served by
    // dnsmasq on the gateway (router advertisements for both prefixes,
    // autonomous for d::, managed for e::).
    create(
        "bench6",
        &["--subnet", "198.19.0.0/16", "--subnet6", "2001:db8:b::/64"],
    );
    create(
        "slaac6",
        &["--ipv6", "slaac", "--subnet6", "2001:db8:d::/64"],
    );
    create(
        "dhcp6",
        &["--ipv6", "dhcpv6", "--subnet6", "2001:db8:e::/64"],
    );
    for address in ["2001:db8:d::1/64", "2001:db8:e::1/64"] {
        sh(&[
            "ip",
            "-n",
            &ns("gw"),
            "addr",
            "add",
            address,
            "dev",
            "lan0",
            "nodad",
        ]);
    }
    let _dnsmasq = Server(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns("gw"),
                "dnsmasq",
                "--keep-in-foreground",
            ])
            .args([
                "--conf-file=/dev/null",
                "--port=0",
                "--user=root",
                "--group=root",
            ])
            .args(["--interface=lan0", "--bind-interfaces", "--enable-ra"])
            .args([
                "--dhcp-range=2001:db8:d::,ra-only,64",
                "--dhcp-range=2001:db8:e::100,2001:db8:e::ffff,64,10m",
            ])
            .arg(format!(
                "--dhcp-leasefile={}",
                work.path().join("leases6").display()
            ))
            .arg(format!(
                "--pid-file={}",
                work.path().join("dnsmasq.pid").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (dnsmasq-base)"),
    );
    // The network containers name: allocation from its range.
    create(
        "bench",
        &["--subnet", "198.51.100.0/24", "--gateway", "198.51.100.1"],
    );
    // The same with host access: a host-side device and a /32 route.
    create(
        "bench-ha",
        &[
            "--subnet",
            "192.0.2.0/24",
            "--gateway",
            "192.0.2.1",
            "--host-access",
        ],
    );
    // The baseline binary keeps its own store (its format may be older).
    let baseline_config = config_file(work.path(), "baseline");
    // The baseline's store gets as many networks as this one's (an attach
    // reads them), its `bench` a pool of the same size.
    if let Some(baseline) = &baseline {
        mirror_networks(
            baseline,
            &baseline_config,
            [64, 65],
            "198.18.128.0/17",
            0x1b,
        );
    }
    // The same binary with a running daemon taking the hooks over
    // (`[daemon] serve_hooks`, the default): a store and a runtime
    // directory of its own, the same networks.
    let served_config = config_file(work.path(), "served");
    mirror_networks(
        Path::new(MACVLAN),
        &served_config,
        [66, 67],
        "198.19.128.0/17",
        0x2b,
    );
    let served_daemon = Server(
        Command::new(MACVLAN)
            .args(["--config", served_config.to_str().unwrap(), "daemon"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("macvlan daemon"),
    );
    let socket = work.path().join("served-run/hooks.sock");
    let waited = std::time::Instant::now();
    while !socket.exists() {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the daemon's socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let bundle = work.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(
        bundle.join("config.json"),
        r#"{"process":{"env":["PATH=/bin"]},"linux":{"namespaces":[{"type":"network"}]}}"#,
    )
    .unwrap();
    let cni_conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"bench","type":"macvlan","master":"lan0","mode":"bridge",
            "ipam":{{"type":"host-local","subnet":"198.51.100.0/22","gateway":"198.51.100.1","dataDir":"{}"}}}}"#,
        work.path().join("cni-ipam").display()
    );

    let hook = |stage: &str, state: &str| {
        let mut command = Command::new(MACVLAN);
        command.args(["--config", config.to_str().unwrap(), "hook", stage]);
        timed(command, state)
    };
    let cni = |verb: &str, id: &str, pid: u32| support::cni(CNI_MACVLAN, verb, id, pid, &cni_conf);
    // The CNI plugin with a static IPv6 address from host-local: it waits
    // for DAD to settle before it returns.
    let cni6_conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"bench6","type":"macvlan","master":"lan0","mode":"bridge",
            "ipam":{{"type":"host-local","ranges":[[{{"subnet":"2001:db8:c::/64"}}]],"dataDir":"{}"}}}}"#,
        work.path().join("cni-ipam6").display()
    );
    let cni6 =
        |verb: &str, id: &str, pid: u32| support::cni(CNI_MACVLAN, verb, id, pid, &cni6_conf);
    // Our CNI face on the same network the hook's network requests use.
    let our_cni_conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "bench", "type": "macvlan-runc",
        "network": "bench", "config": config,
    })
    .to_string();
    let our_cni =
        |verb: &str, id: &str, pid: u32| support::cni(MACVLAN, verb, id, pid, &our_cni_conf);

    let mut network_attach = Series::default();
    let mut host_access_attach = Series::default();
    let mut network_poststop = Series::default();
    let mut ours_block = Block::default();
    let mut served_block = Block::default();
    let mut base_block = Block::default();
    let mut ours_attach = Series::default();
    let mut ours_poststop = Series::default();
    let mut ours_detach = Series::default();
    let mut ours_noop = Series::default();
    let mut floor = Series::default();
    // The runtime wrapper's pass-through against runc itself: `list` on an
    // empty root, the kind of call containerd's shim makes several of.
    let mut runc_list = Series::default();
    let mut wrapper_list = Series::default();
    let runc_root = work.path().join("runc-root");
    let list = |program: &str| {
        let mut command = Command::new(program);
        command.env("MACVLAN_CONFIG", &config).args([
            "--root",
            runc_root.to_str().unwrap(),
            "list",
        ]);
        timed(command, "")
    };
    let mut cni_add = Series::default();
    let mut cni_del = Series::default();
    let mut dual_attach = Series::default();
    let mut our_cni_add = Series::default();
    let mut our_cni_del = Series::default();
    let mut cni6_add = Series::default();
    let mut slaac_attach = Series::default();
    let mut dhcp6_attach = Series::default();

    for i in 0..containers {
        let mut ours = container();
        let mut theirs = container();
        let id = format!("bench-{i}");
        let ip = format!("203.0.113.{}/24", 2 + (i % 250));
        let ip = if i < 250 {
            ip
        } else {
            format!("198.18.{}.{}/16", i / 250, 2 + i % 250)
        };
        let state = |status: &str, pid: Option<u32>| {
            serde_json::json!({
                "ociVersion": "1.0.2", "id": id, "status": status, "pid": pid,
                "bundle": bundle,
                "annotations": {"macvlan.type": "flat", "macvlan.host-interface": "lan0", "macvlan.ip": ip}
            })
            .to_string()
        };
        let noop_state = serde_json::json!({
            "ociVersion": "1.0.2", "id": format!("noop-{i}"), "status": "creating",
            "pid": ours.id(), "bundle": bundle
        })
        .to_string();
        let mut named = container();
        let mut reachable = container();
        let network_state = |status: &str, pid: Option<u32>| {
            serde_json::json!({
                "ociVersion": "1.0.2", "id": format!("net-{i}"), "status": status, "pid": pid,
                "bundle": bundle, "annotations": {"macvlan.network": "bench"}
            })
            .to_string()
        };
        let host_access_state = |status: &str, pid: Option<u32>| {
            serde_json::json!({
                "ociVersion": "1.0.2", "id": format!("ha-{i}"), "status": status, "pid": pid,
                "bundle": bundle, "annotations": {"macvlan.network": "bench-ha"}
            })
            .to_string()
        };
        // Alternate which tool goes first, so neither always meets a warm cache.
        let run_ours = |attach: &mut Series, poststop: &mut Series, detach: &mut Series| {
            attach.push(hook("createRuntime", &state("creating", Some(ours.id()))));
            poststop.push(hook("poststop", &state("stopped", None)));
            let mut command = Command::new(MACVLAN);
            command.args([
                "--config",
                config.to_str().unwrap(),
                "detach",
                "--id",
                &id,
                "--pid",
            ]);
            command.arg(ours.id().to_string());
            detach.push(timed(command, ""));
        };
        let run_cni = |add: &mut Series, del: &mut Series| {
            add.push(cni("ADD", &id, theirs.id()));
            del.push(cni("DEL", &id, theirs.id()));
        };
        let mut pod = container();
        let run_our_cni = |add: &mut Series, del: &mut Series| {
            add.push(our_cni("ADD", &format!("pod-{i}"), pod.id()));
            del.push(our_cni("DEL", &format!("pod-{i}"), pod.id()));
        };
        if i % 2 == 0 {
            run_ours(&mut ours_attach, &mut ours_poststop, &mut ours_detach);
            run_cni(&mut cni_add, &mut cni_del);
            run_our_cni(&mut our_cni_add, &mut our_cni_del);
        } else {
            run_our_cni(&mut our_cni_add, &mut our_cni_del);
            run_cni(&mut cni_add, &mut cni_del);
            run_ours(&mut ours_attach, &mut ours_poststop, &mut ours_detach);
        }
        let _ = pod.kill();
        let _ = pod.wait();
        // The network request and the baseline, rotating who goes first.
        let run_network = |attach: &mut Series, poststop: &mut Series| {
            attach.push(hook(
                "createRuntime",
                &network_state("creating", Some(named.id())),
            ));
            poststop.push(hook("poststop", &network_state("stopped", None)));
            let mut command = Command::new(MACVLAN);
            command.args(["--config", config.to_str().unwrap(), "detach", "--id"]);
            command.arg(format!("net-{i}"));
            timed(command, "");
        };
        // Before/after: the same block of steps for this binary and the
        // baseline (--baseline), each with a container of its own, who goes
        // first alternating. An attach right after a detach or a killed
        // namespace waits for the kernel's cleanup (it holds the RTNL
        // lock), so both binaries must meet the same sequence.
        let run_block = |binary: &Path, config: &Path, tag: &str, out: &mut Block| {
            let run = |args: &[&str], stdin: &str| {
                let mut command = Command::new(binary);
                command
                    .args(["--config", config.to_str().unwrap()])
                    .args(args);
                timed(command, stdin)
            };
            let state =
                |id: &str, status: &str, pid: Option<u32>, annotations: serde_json::Value| {
                    serde_json::json!({
                        "ociVersion": "1.0.2", "id": id, "status": status, "pid": pid,
                        "bundle": bundle, "annotations": annotations
                    })
                    .to_string()
                };
            let mut process = container();
            let adhoc = serde_json::json!({"macvlan.type": "flat", "macvlan.host-interface": "lan0", "macvlan.ip": ip});
            let named = serde_json::json!({"macvlan.network": "bench"});
            for (kind, annotations) in [("adhoc", adhoc), ("net", named)] {
                let id = format!("{tag}-{kind}-{i}");
                let attach = run(
                    &["hook", "createRuntime"],
                    &state(&id, "creating", Some(process.id()), annotations.clone()),
                );
                let poststop = run(
                    &["hook", "poststop"],
                    &state(&id, "stopped", None, annotations),
                );
                run(&["detach", "--id", &id], "");
                if kind == "adhoc" {
                    out.adhoc.push(attach);
                } else {
                    out.network.push(attach);
                    out.poststop.push(poststop);
                }
            }
            out.noop.push(run(&["hook", "createRuntime"], &noop_state));
            let _ = process.kill();
            let _ = process.wait();
        };
        // Ids of their own: the MAC follows from the id, and the kernel
        // frees a deleted link's MAC a while after the deletion. This binary
        // alone, the same served by its daemon, and the baseline, rotating.
        let ways = if baseline.is_some() { 3 } else { 2 };
        for way in (0..ways).map(|n| (n + i) % ways) {
            match way {
                0 => run_block(Path::new(MACVLAN), &config, "new", &mut ours_block),
                1 => run_block(Path::new(MACVLAN), &served_config, "srv", &mut served_block),
                _ => run_block(
                    baseline.as_deref().unwrap(),
                    &baseline_config,
                    "old",
                    &mut base_block,
                ),
            }
        }
        run_network(&mut network_attach, &mut network_poststop);
        // Dual stack and IPv4 only, side by side (who goes first alternates).
        let mut dual = container();
        let dual_state = |status: &str, pid: Option<u32>| {
            serde_json::json!({
                "ociVersion": "1.0.2", "id": format!("dual-{i}"), "status": status, "pid": pid,
                "bundle": bundle, "annotations": {"macvlan.network": "bench6"}
            })
            .to_string()
        };
        dual_attach.push(hook(
            "createRuntime",
            &dual_state("creating", Some(dual.id())),
        ));
        hook("poststop", &dual_state("stopped", None));
        let mut command = Command::new(MACVLAN);
        command.args(["--config", config.to_str().unwrap(), "detach", "--id"]);
        command.arg(format!("dual-{i}"));
        timed(command, "");
        let _ = dual.kill();
        let _ = dual.wait();
        host_access_attach.push(hook(
            "createRuntime",
            &host_access_state("creating", Some(reachable.id())),
        ));
        hook("poststop", &host_access_state("stopped", None));
        let mut command = Command::new(MACVLAN);
        command.args(["--config", config.to_str().unwrap(), "detach", "--id"]);
        command.arg(format!("ha-{i}"));
        timed(command, "");
        ours_noop.push(hook("createRuntime", &noop_state));
        floor.push(timed(Command::new("/bin/true"), ""));
        if i % 2 == 0 {
            runc_list.push(list("runc"));
            wrapper_list.push(list(WRAPPER));
        } else {
            wrapper_list.push(list(WRAPPER));
            runc_list.push(list("runc"));
        }
        for child in [&mut ours, &mut theirs, &mut named, &mut reachable] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    // Time to an address that a router or server gives: fewer samples,
    // each waits on the network.
    for i in 0..containers.min(20) {
        for (network, series) in [("slaac6", &mut slaac_attach), ("dhcp6", &mut dhcp6_attach)] {
            let mut child = container();
            let id = format!("{network}-{i}");
            let state = |status: &str, pid: Option<u32>| {
                serde_json::json!({
                    "ociVersion": "1.0.2", "id": id, "status": status, "pid": pid,
                    "bundle": bundle, "annotations": {"macvlan.network": network}
                })
                .to_string()
            };
            series.push(hook("createRuntime", &state("creating", Some(child.id()))));
            let _ = child.kill();
            let _ = child.wait();
            hook("poststop", &state("stopped", None));
            let mut command = Command::new(MACVLAN);
            command.args(["--config", config.to_str().unwrap(), "detach", "--id", &id]);
            timed(command, "");
        }
        // The CNI plugin's static IPv6: seconds each (it waits for DAD).
        let mut six = container();
        cni6_add.push(cni6("ADD", &format!("six-{i}"), six.id()));
        cni6("DEL", &format!("six-{i}"), six.id());
        let _ = six.kill();
        let _ = six.wait();
    }
    // The lease keeper the DHCPv6 attaches started: stopped by its pid.
    if let Ok(pid) = std::fs::read_to_string(work.path().join("main-run/daemon.pid")) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    let attach_ratio = ours_attach.median().as_secs_f64() / cni_add.median().as_secs_f64();
    let detach_ratio = ours_detach.median().as_secs_f64() / cni_del.median().as_secs_f64();
    let mut report = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        report,
        "# Attach and detach: macvlan hook vs CNI macvlan + host-local\n"
    );
    let uname = Command::new("uname").arg("-srm").output().unwrap();
    let _ =
        writeln!(
        report,
        "{containers} containers, one process per operation, interleaved in one run on one lab \
         (a process with its own netns per container; parent `lan0`, a veth on a lab bridge).\n\
         Machine: {} cores, kernel {}.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        String::from_utf8_lossy(&uname.stdout).trim()
    );
    let _ = writeln!(report, "| operation | median ms | p99 ms | peak RSS KiB |");
    let _ = writeln!(report, "|---|---:|---:|---:|");
    let mut rows = vec![
        (
            "macvlan hook createRuntime (attach), ad-hoc, static",
            &ours_attach,
        ),
        (
            "macvlan hook createRuntime (attach), network, address allocated",
            &network_attach,
        ),
        ("macvlan hook poststop, network", &network_poststop),
        (
            "macvlan hook createRuntime (attach), network with host access",
            &host_access_attach,
        ),
    ];
    rows.extend([
        (
            "block, this binary alone: createRuntime, ad-hoc, static",
            &ours_block.adhoc,
        ),
        (
            "block, served by the daemon: createRuntime, ad-hoc, static",
            &served_block.adhoc,
        ),
        (
            "block, this binary alone: createRuntime, network",
            &ours_block.network,
        ),
        (
            "block, served by the daemon: createRuntime, network",
            &served_block.network,
        ),
        (
            "block, this binary alone: poststop, network",
            &ours_block.poststop,
        ),
        (
            "block, served by the daemon: poststop, network",
            &served_block.poststop,
        ),
        (
            "block, this binary alone: asking for nothing",
            &ours_block.noop,
        ),
        (
            "block, served by the daemon: asking for nothing",
            &served_block.noop,
        ),
    ]);
    if baseline.is_some() {
        rows.extend([
            (
                "block, baseline binary: createRuntime, ad-hoc, static",
                &base_block.adhoc,
            ),
            (
                "block, baseline binary: createRuntime, network",
                &base_block.network,
            ),
            (
                "block, baseline binary: poststop, network",
                &base_block.poststop,
            ),
            (
                "block, baseline binary: asking for nothing",
                &base_block.noop,
            ),
        ]);
    }
    for (name, series) in rows.into_iter().chain([
        (
            "macvlan hook poststop (mark stopped; netns gone)",
            &ours_poststop,
        ),
        (
            "macvlan detach (delete link, release address)",
            &ours_detach,
        ),
        ("macvlan hook, container asking for nothing", &ours_noop),
        ("/bin/true (the cost of any process here)", &floor),
        ("runc list (a runtime call containerd makes)", &runc_list),
        (
            "the same through macvlan-runc (exec of the wrapper, then runc)",
            &wrapper_list,
        ),
        ("CNI macvlan ADD", &cni_add),
        ("CNI macvlan DEL", &cni_del),
        (
            "macvlan-runc as a CNI plugin: ADD (network, address allocated)",
            &our_cni_add,
        ),
        ("macvlan-runc as a CNI plugin: DEL", &our_cni_del),
        (
            "macvlan hook createRuntime, dual-stack network (IPv4 + static IPv6)",
            &dual_attach,
        ),
        (
            "CNI macvlan ADD, static IPv6 (host-local; waits for DAD)",
            &cni6_add,
        ),
        (
            "macvlan hook createRuntime, SLAAC (until the address is usable)",
            &slaac_attach,
        ),
        (
            "macvlan hook createRuntime, DHCPv6 (until the lease is on the interface)",
            &dhcp6_attach,
        ),
    ]) {
        let _ = writeln!(
            report,
            "| {name} | {} | {} | {} |",
            ms(series.median()),
            ms(series.p99()),
            series.max_rss_kib
        );
    }
    let _ = writeln!(
        report,
        "\nRatios of medians (target ≤ 0.20): attach / CNI ADD = **{attach_ratio:.3}**, \
         detach / CNI DEL = **{detach_ratio:.3}**, poststop / CNI DEL = **{:.3}**.",
        ours_poststop.median().as_secs_f64() / cni_del.median().as_secs_f64()
    );
    let _ = writeln!(
        report,
        "\nA process that does nothing costs {} ms here ({:.3} of CNI ADD): the floor of \
         any hook invoked as a process. In the real lifecycle the hook's detach is \
         `poststop`: the kernel removes the macvlan with the container's namespace, \
         outside any hook; `macvlan detach` deletes it explicitly and pays the kernel's \
         link-unregistration time, as CNI DEL does.",
        ms(floor.median()),
        floor.median().as_secs_f64() / cni_add.median().as_secs_f64()
    );
    let network_ratio = network_attach.median().as_secs_f64() / ours_attach.median().as_secs_f64();
    let _ = writeln!(
        report,
        "\nHost access vs the same network request without it (medians; target ≤ 1.15): **{:.3}**.",
        host_access_attach.median().as_secs_f64() / network_attach.median().as_secs_f64()
    );
    let _ = writeln!(
        report,
        "\nNetwork request vs ad-hoc request (medians): **{network_ratio:.3}**."
    );
    if baseline.is_some() {
        let _ = writeln!(
            report,
            "Against the baseline binary in the before/after block (the same steps in the same order): \
             ad-hoc **{:.3}**, network **{:.3}** (target: neither above 1.10).",
            ours_block.adhoc.median().as_secs_f64() / base_block.adhoc.median().as_secs_f64(),
            ours_block.network.median().as_secs_f64() / base_block.network.median().as_secs_f64()
        );
    }
    let _ = writeln!(
        report,
        "\nDual stack vs IPv4 only, the same network request otherwise (medians; target ≤ 1.20): **{:.3}**. \
         Time to an IPv6 address ({} samples each): SLAAC {} ms, DHCPv6 {} ms, against the CNI \
         macvlan plugin's static IPv6 ADD {} ms.",
        dual_attach.median().as_secs_f64() / network_attach.median().as_secs_f64(),
        slaac_attach.walls.len(),
        ms(slaac_attach.median()),
        ms(dhcp6_attach.median()),
        ms(cni6_add.median())
    );
    let _ = writeln!(
        report,
        "\nmacvlan-runc's CNI ADD vs the CNI macvlan plugin's ADD with host-local, same run (medians; \
         target ≤ 0.50): **{:.3}**; DEL vs DEL: **{:.3}**.",
        our_cni_add.median().as_secs_f64() / cni_add.median().as_secs_f64(),
        our_cni_del.median().as_secs_f64() / cni_del.median().as_secs_f64()
    );
    // Above the floor: what the hook costs beyond starting any process.
    let above =
        |series: &Series| (series.median().as_secs_f64() - floor.median().as_secs_f64()) * 1000.0;
    let _ = writeln!(
        report,
        "\n## Above the process floor\n\nMedian minus the median of `/bin/true` in this run, in ms, \
         from the block where each way ran the same steps in turn: the hook doing the work \
         itself, the hook handing it to a running `macvlan daemon` (`[daemon] serve_hooks`){}.\n",
        if baseline.is_some() {
            ", and the baseline binary"
        } else {
            ""
        }
    );
    let _ = writeln!(
        report,
        "| operation | target | hook alone | served by the daemon |{}",
        if baseline.is_some() {
            " baseline |"
        } else {
            ""
        }
    );
    let _ = writeln!(
        report,
        "|---|---:|---:|---:|{}",
        if baseline.is_some() { "---:|" } else { "" }
    );
    let verdict = |series: &Series, target: f64| {
        let above = above(series);
        let verdict = if above <= target { "met" } else { "missed" };
        format!("{above:.2} ({verdict})")
    };
    for (name, target, pick) in [
        (
            "attach (network, address allocated)",
            1.0,
            (|b: &Block| &b.network) as fn(&Block) -> &Series,
        ),
        ("poststop (network)", 0.5, |b: &Block| &b.poststop),
        ("hook asking for nothing", 0.2, |b: &Block| &b.noop),
    ] {
        let _ = write!(
            report,
            "| {name} | ≤ {target:.1} | {} | {} |",
            verdict(pick(&ours_block), target),
            verdict(pick(&served_block), target)
        );
        if baseline.is_some() {
            let _ = write!(report, " {:.2} |", above(pick(&base_block)));
        }
        let _ = writeln!(report);
    }
    let _ = writeln!(
        report,
        "\nThe runtime wrapper adds {:.2} ms to each runtime call that needs no network \
         (`runc list`: {} ms, through `macvlan-runc`: {} ms).",
        (wrapper_list.median().as_secs_f64() - runc_list.median().as_secs_f64()) * 1000.0,
        ms(runc_list.median()),
        ms(wrapper_list.median())
    );
    std::fs::write(out_dir.join("attach.md"), &report).unwrap();
    print!("{report}");
    drop(served_daemon);
    drop(lab);
}
