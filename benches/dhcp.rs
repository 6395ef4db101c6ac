//! DHCP attach: time from hook start to a configured address, and the
//! release at stop, for the built-in client against the CNI macvlan plugin
//! with dhcp IPAM and its daemon (`/usr/lib/cni/dhcp daemon`), interleaved
//! on one lab against one dnsmasq. Writes `bench-results/dhcp.md`.
//!
//! `scripts/bench.sh` runs it; alone: `cargo bench --bench dhcp --
//! [--containers N] [--pinging N] [--out DIR]` (default 100 containers
//! against dnsmasq --no-ping, and a tenth of that against its defaults), as root.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::dhcp_server::Dnsmasq;
use common::Lab;
use support::{argument, ms, rss_kib, timed, Series};

const CNI_MACVLAN: &str = "/usr/lib/cni/macvlan";
const CNI_DHCP: &str = "/usr/lib/cni/dhcp";

/// A process killed on drop (the CNI dhcp daemon).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one round measured.
#[derive(Default)]
struct Round {
    ours_attach: Series,
    quick_attach: Series,
    ours_stop: Series,
    cni_add: Series,
    cni_del: Series,
    leases_left: usize,
}

/// The two clients' invocations.
struct Tools {
    config: PathBuf,
    no_probe: PathBuf,
    bundle: PathBuf,
    cni_conf: String,
}

impl Tools {
    fn hook(&self, config: &std::path::Path, stage: &str, state: &str) -> support::Sample {
        let mut command = Command::new(common::MACVLAN);
        command.args(["--config", config.to_str().unwrap(), "hook", stage]);
        timed(command, state)
    }

    fn cni(&self, verb: &str, id: &str, pid: u32) -> support::Sample {
        support::cni(CNI_MACVLAN, verb, id, pid, &self.cni_conf)
    }

    fn state(&self, id: &str, status: &str, pid: Option<u32>) -> String {
        serde_json::json!({
            "ociVersion": "1.0.2", "id": id, "status": status, "pid": pid,
            "bundle": self.bundle,
            "annotations": {"macvlan.type": "dhcp", "macvlan.host-interface": "lan0"}
        })
        .to_string()
    }
}

/// `containers` attaches and stops with each client, interleaved, against
/// the dnsmasq that runs now.
fn measure(lab: &Lab, tools: &Tools, containers: usize, tag: &str) -> Round {
    let mut round = Round::default();
    for i in 0..containers {
        let ours = lab.long_netns_process("h1");
        let quick = lab.long_netns_process("h1");
        let theirs = lab.long_netns_process("h1");
        let id = format!("{tag}-{i}");
        let quick_id = format!("{tag}-np-{i}");
        let cni_id = format!("{tag}-cni-{i}");
        let probing = |round: &mut Round| {
            let config = &tools.config;
            round.ours_attach.push(tools.hook(
                config,
                "createRuntime",
                &tools.state(&id, "creating", Some(ours.pid())),
            ));
            round.ours_stop.push(tools.hook(
                config,
                "poststop",
                &tools.state(&id, "stopped", None),
            ));
        };
        let not_probing = |round: &mut Round| {
            round.quick_attach.push(tools.hook(
                &tools.no_probe,
                "createRuntime",
                &tools.state(&quick_id, "creating", Some(quick.pid())),
            ));
            tools.hook(
                &tools.no_probe,
                "poststop",
                &tools.state(&quick_id, "stopped", None),
            );
        };
        let cni = |round: &mut Round| {
            round.cni_add.push(tools.cni("ADD", &cni_id, theirs.pid()));
            round.cni_del.push(tools.cni("DEL", &cni_id, theirs.pid()));
        };
        // Each goes first in turn: a server that remembers recent work (dnsmasq
        // caches its ping results) favours whoever comes after.
        let mut order: [&dyn Fn(&mut Round); 3] = [&probing, &not_probing, &cni];
        order.rotate_left(i % 3);
        for run in order {
            run(&mut round);
        }
    }
    round
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let containers: usize = argument(&args, "--containers")
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let out_dir = argument(&args, "--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-results"));
    std::fs::create_dir_all(&out_dir).unwrap();
    assert!(
        std::path::Path::new(CNI_DHCP).exists(),
        "install containernetworking-plugins"
    );

    let lab = Lab::new(&["h1"]);
    let work = lab.dir.path().join("bench");
    std::fs::create_dir_all(&work).unwrap();
    // Both clients run from the lab host's namespace, as the hook and the
    // CNI plugin would on a real host.
    let host_ns = std::fs::File::open(format!("/run/netns/{}", lab.ns("h1"))).unwrap();
    nix::sched::setns(&host_ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");

    let config = lab.config_path("h1");
    let no_probe = work.join("no-probe.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[dhcp]\nprobe_wait = \"0s\"\n");
    std::fs::write(&no_probe, text).unwrap();
    let bundle = work.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(
        bundle.join("config.json"),
        r#"{"process":{"env":["PATH=/bin"]},"linux":{"namespaces":[{"type":"network"}]}}"#,
    )
    .unwrap();

    let socket = work.join("cni-dhcp.sock");
    let cni_daemon = Server(
        Command::new(CNI_DHCP)
            .args(["daemon", "-socketpath", socket.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the CNI dhcp daemon"),
    );
    let started = Instant::now();
    while !socket.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "CNI dhcp daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let tools = Tools {
        config,
        no_probe,
        bundle,
        cni_conf: format!(
            r#"{{"cniVersion":"1.0.0","name":"bench","type":"macvlan","master":"lan0","mode":"bridge",
            "ipam":{{"type":"dhcp","daemonSocketPath":"{}"}}}}"#,
            socket.display()
        ),
    };

    // dnsmasq pings an address before it first offers it and waits up to
    // 3 s for an answer: that wait dominates every new lease, so the clients
    // themselves are compared against a server with --no-ping, and a few
    // rounds with dnsmasq's defaults show what a real server adds.
    let pinging = argument(&args, "--pinging")
        .and_then(|n| n.parse().ok())
        .unwrap_or((containers / 10).max(3));
    let mut rounds = Vec::new();
    for (label, extra, count, tag) in [
        ("dnsmasq --no-ping", vec!["--no-ping"], containers, "fast"),
        (
            "dnsmasq defaults (ping check before a new offer)",
            vec![],
            pinging,
            "ping",
        ),
    ] {
        let server = Dnsmasq::start(&lab, tag, &extra);
        let mut round = measure(&lab, &tools, count, tag);
        round.leases_left = server.leases().len();
        rounds.push((label, count, round));
        drop(server);
    }
    let daemon_rss = lab.daemon_pid("h1").and_then(rss_kib);
    let cni_daemon_rss = rss_kib(cni_daemon.0.id() as i32);

    let mut report = String::new();
    let uname = Command::new("uname").arg("-srm").output().unwrap();
    let dnsmasq = Command::new("dnsmasq").arg("--version").output().unwrap();
    let _ = writeln!(report, "# DHCP attach: built-in client vs CNI dhcp\n");
    let _ = writeln!(
        report,
        "One process per operation, interleaved in one run: the `macvlan` hook (TYPE=dhcp) and \
         the CNI macvlan plugin with dhcp IPAM and its daemon (`{CNI_DHCP} daemon`), against \
         one dnsmasq ({}) in the lab gateway's namespace. Attach = hook start until the \
         address is configured (the hook returns only then), as for CNI ADD; every container \
         is new (new MAC, new lease). Machine: {} cores, kernel {}.",
        String::from_utf8_lossy(&dnsmasq.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        String::from_utf8_lossy(&uname.stdout).trim()
    );
    let ratio = |a: &Series, b: &Series| a.median().as_secs_f64() / b.median().as_secs_f64();
    for (label, count, round) in &rounds {
        let _ = writeln!(report, "\n## {label}: {count} containers per client\n");
        let _ = writeln!(report, "| operation | median ms | p99 ms | peak RSS KiB |");
        let _ = writeln!(report, "|---|---:|---:|---:|");
        for (name, series) in [
            (
                "macvlan hook, TYPE=dhcp (ARP probe 200 ms, the default)",
                &round.ours_attach,
            ),
            (
                "macvlan hook, TYPE=dhcp, probe_wait = 0s",
                &round.quick_attach,
            ),
            (
                "macvlan hook poststop (RELEASE from a throwaway netns)",
                &round.ours_stop,
            ),
            ("CNI macvlan + dhcp ADD", &round.cni_add),
            ("CNI macvlan + dhcp DEL (RELEASE)", &round.cni_del),
        ] {
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
            "\nRatios of medians: attach / CNI ADD = **{:.3}** (with the probe), **{:.3}** \
             (without); poststop / CNI DEL = **{:.3}**. Leases left in dnsmasq after every \
             container stopped: {}.",
            ratio(&round.ours_attach, &round.cni_add),
            ratio(&round.quick_attach, &round.cni_add),
            ratio(&round.ours_stop, &round.cni_del),
            round.leases_left
        );
    }
    let describe = |rss: Option<(u64, u64)>| match rss {
        Some((peak, now)) => format!("peak {peak} KiB, now {now} KiB"),
        None => "not running".to_string(),
    };
    let _ = writeln!(
        report,
        "\nLong-running processes at the end: `macvlan daemon` (the lease keeper) {}; the CNI \
         dhcp daemon {}.",
        describe(daemon_rss),
        describe(cni_daemon_rss)
    );
    std::fs::write(out_dir.join("dhcp.md"), &report).unwrap();
    print!("{report}");
    drop(cni_daemon);
    drop(lab);
}
