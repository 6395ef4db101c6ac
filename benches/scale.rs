//! Scale: N containers (default 1,000) attached on one lab host by the
//! hook, one after another and then 32 at a time; attach time by container
//! count, distinct addresses, and nothing left once every container stopped
//! and gc ran; the hook's peak RSS; and `macvlan daemon`'s RSS while it
//! keeps N DHCP leases. Writes `bench-results/scale.md` and
//! `bench-results/scale-attach.svg`.
//!
//! `scripts/bench.sh` runs it; alone: `cargo bench --bench scale --
//! [--containers N] [--parallel P] [--dhcp N] [--out DIR]`, as root.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::dhcp_server::Dnsmasq;
use common::{Lab, NetnsProcess};
use support::{argument, ms, rss_kib, timed, Sample, Series};

/// The flat address of container `i`: 198.18.0.0/16, skipping .0, .1, .255.
fn address(i: usize) -> String {
    format!("198.18.{}.{}/16", i / 250, 2 + i % 250)
}

struct Bench {
    lab: Lab,
    config: PathBuf,
    dhcp_config: PathBuf,
    bundle: PathBuf,
}

impl Bench {
    fn hook(&self, config: &Path, stage: &str, state: &str) -> Sample {
        let mut command = Command::new(common::MACVLAN);
        command.args(["--config", config.to_str().unwrap(), "hook", stage]);
        timed(command, state)
    }

    fn state(
        &self,
        id: &str,
        status: &str,
        pid: Option<u32>,
        network: serde_json::Value,
    ) -> String {
        serde_json::json!({
            "ociVersion": "1.0.2", "id": id, "status": status, "pid": pid,
            "bundle": self.bundle, "annotations": network
        })
        .to_string()
    }

    fn containers(&self, n: usize) -> Vec<NetnsProcess> {
        (0..n).map(|_| self.lab.long_netns_process("h1")).collect()
    }

    /// Every container's eth0 address, read by `ip` inside its namespace.
    fn addresses(&self, processes: &[NetnsProcess]) -> Vec<String> {
        processes
            .iter()
            .map(|p| {
                common::must(
                    "nsenter",
                    &[
                        &p.nsenter_arg(),
                        "ip",
                        "-4",
                        "-o",
                        "addr",
                        "show",
                        "dev",
                        "eth0",
                    ],
                )
                .split_whitespace()
                .nth(3)
                .unwrap_or("")
                .to_string()
            })
            .collect()
    }

    /// Stops every container (poststop), ends their processes, runs gc,
    /// and returns what is left: records, store keys, host links.
    fn tear_down(&self, config: &Path, tag: &str, processes: Vec<NetnsProcess>) -> String {
        for i in 0..processes.len() {
            self.hook(
                config,
                "poststop",
                &self.state(
                    &format!("{tag}-{i}"),
                    "stopped",
                    None,
                    serde_json::json!({}),
                ),
            );
        }
        drop(processes);
        let out = self.lab.macvlan("h1", &["gc"]);
        assert!(out.status.success(), "gc: {}", common::text(&out));
        let records = self.lab.records("h1").len();
        let keys = self.lab.store_keys("h1");
        let links: Vec<String> = self
            .lab
            .links("h1")
            .into_iter()
            .filter(|l| l != "lo" && l != "lan0")
            .collect();
        format!(
            "{records} records, {} store keys, {} extra links on the host",
            keys.len(),
            links.len()
        )
    }
}

/// The median of the attach times of containers `range` (by count).
fn window(times: &[(usize, Duration)], range: std::ops::Range<usize>) -> Duration {
    let mut picked: Vec<Duration> = times
        .iter()
        .filter(|(i, _)| range.contains(i))
        .map(|(_, d)| *d)
        .collect();
    picked.sort();
    picked.get(picked.len() / 2).copied().unwrap_or_default()
}

fn plot(path: &Path, series: &[(&str, &[(usize, Duration)])]) {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (760, 420)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let count = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|(i, _)| *i))
        .max()
        .unwrap_or(1)
        + 1;
    let mut all: Vec<f64> = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|(_, d)| d.as_secs_f64() * 1000.0))
        .collect();
    all.sort_by(f64::total_cmp);
    // Scale to the 99th percentile: a few outliers would flatten the rest.
    let top = all.get(all.len() * 99 / 100).copied().unwrap_or(1.0) * 1.3;
    let mut chart = ChartBuilder::on(&root)
        .caption("attach time by container count", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0usize..count, 0.0..top.max(0.1))
        .unwrap();
    chart
        .configure_mesh()
        .x_desc("containers attached on the host")
        .y_desc("attach ms")
        .draw()
        .unwrap();
    for ((name, points), color) in series.iter().zip([BLUE, RED, GREEN, MAGENTA]) {
        chart
            .draw_series(
                points
                    .iter()
                    .map(|(i, d)| Circle::new((*i, d.as_secs_f64() * 1000.0), 2, color.filled())),
            )
            .unwrap()
            .label(*name)
            .legend(move |(x, y)| Circle::new((x + 10, y), 3, color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .unwrap();
    root.present().unwrap();
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

/// The daemon's memory and CPU share over `watch`, as report text.
fn watch_daemon(lab: &Lab, watch: Duration) -> String {
    let Some(pid) = lab.daemon_pid("h1") else {
        return "not running (!)".into();
    };
    let before = cpu_seconds(pid);
    std::thread::sleep(watch);
    let after = cpu_seconds(pid);
    let cpu = match (before, after) {
        (Some(b), Some(a)) => format!("{:.1} % of one core", (a - b) / watch.as_secs_f64() * 100.0),
        _ => "?".into(),
    };
    match rss_kib(pid) {
        Some((peak, now)) => format!("RSS {now} KiB (peak {peak} KiB), CPU {cpu} over {watch:?}"),
        None => "exited (!)".into(),
    }
}

/// Packets the kernel dropped from its per-CPU input backlogs so far
/// (/proc/net/softnet_stat, second column, summed over CPUs).
fn backlog_drops() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|hex| u64::from_str_radix(hex, 16).ok())
        .sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = argument(&args, "--containers")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    // DHCP containers: by default as many; fewer keeps a run under the
    // kernel's broadcast limit (see the report).
    let dhcp_count: usize = argument(&args, "--dhcp")
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    let parallel: usize = argument(&args, "--parallel")
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let out_dir = argument(&args, "--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-results"));
    std::fs::create_dir_all(&out_dir).unwrap();
    assert!(n >= 20, "--containers: at least 20");

    // A global sysctl, visible only from the machine's own namespace.
    let backlog = std::fs::read_to_string("/proc/sys/net/core/netdev_max_backlog")
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let lab = Lab::new(&["h1"]);
    lab.add_host_address("gw", "198.18.0.1/16");
    let work = lab.dir.path().join("scale");
    std::fs::create_dir_all(&work).unwrap();
    let host_ns = std::fs::File::open(format!("/run/netns/{}", lab.ns("h1"))).unwrap();
    nix::sched::setns(&host_ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    let bundle = work.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(
        bundle.join("config.json"),
        r#"{"process":{"env":["PATH=/bin"]},"linux":{"namespaces":[{"type":"network"}]}}"#,
    )
    .unwrap();
    let config = lab.config_path("h1");
    let dhcp_config = work.join("dhcp.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[dhcp]\nprobe_wait = \"0s\"\n");
    std::fs::write(&dhcp_config, text).unwrap();
    let bench = Bench {
        lab,
        config,
        dhcp_config,
        bundle,
    };
    let flat = |i: usize| {
        serde_json::json!({"macvlan.type": "flat", "macvlan.host-interface": "lan0",
                           "macvlan.ip": address(i), "macvlan.gateway": "198.18.0.1"})
    };

    // One after another.
    let processes = bench.containers(n);
    let mut sequential = Vec::new();
    let mut hook_rss = Series::default();
    for (i, process) in processes.iter().enumerate() {
        let sample = bench.hook(
            &bench.config,
            "createRuntime",
            &bench.state(
                &format!("seq-{i}"),
                "creating",
                Some(process.pid()),
                flat(i),
            ),
        );
        sequential.push((i + 1, sample.wall));
        hook_rss.push(sample);
    }
    let seen = bench.addresses(&processes);
    let distinct_sequential = seen.iter().collect::<HashSet<_>>().len();
    let expected: HashSet<String> = (0..n).map(address).collect();
    let all_right_sequential = seen.iter().all(|a| expected.contains(a));
    let left_sequential = bench.tear_down(&bench.config, "seq", processes);

    // `parallel` at a time.
    let processes = bench.containers(n);
    let next = AtomicUsize::new(0);
    let concurrent = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(process) = processes.get(i) else {
                    break;
                };
                let sample = bench.hook(
                    &bench.config,
                    "createRuntime",
                    &bench.state(
                        &format!("par-{i}"),
                        "creating",
                        Some(process.pid()),
                        flat(i),
                    ),
                );
                // By start: container i + 1 began with i started before it
                // (by completion, the first ones would be the fastest of the
                // first wave).
                concurrent.lock().unwrap().push((i + 1, sample.wall));
            });
        }
    });
    let concurrent = concurrent.into_inner().unwrap();
    let seen = bench.addresses(&processes);
    let distinct_parallel = seen.iter().collect::<HashSet<_>>().len();
    let left_parallel = bench.tear_down(&bench.config, "par", processes);

    // N DHCP leases kept by one daemon.
    let server = Dnsmasq::start_range(
        &bench.lab,
        "scale",
        "198.18.0.10,198.18.63.250,255.255.0.0",
        "198.18.0.1",
        &["--no-ping"],
    );
    let processes = bench.containers(dhcp_count);
    let drops_before = backlog_drops();
    let mut dhcp = Vec::new();
    let dhcp_network =
        serde_json::json!({"macvlan.type": "dhcp", "macvlan.host-interface": "lan0"});
    for (i, process) in processes.iter().enumerate() {
        let sample = bench.hook(
            &bench.dhcp_config,
            "createRuntime",
            &bench.state(
                &format!("dhcp-{i}"),
                "creating",
                Some(process.pid()),
                dhcp_network.clone(),
            ),
        );
        dhcp.push((i + 1, sample.wall));
    }
    // A few keeper rounds over every lease.
    let daemon_with_leases = watch_daemon(&bench.lab, Duration::from_secs(5));
    let leases_held = server.leases().len();
    let seen = bench.addresses(&processes);
    let distinct_dhcp = seen.iter().collect::<HashSet<_>>().len();
    let left_dhcp = bench.tear_down(&bench.dhcp_config, "dhcp", processes);
    let leases_after = server.leases().len();
    let dhcp_drops = backlog_drops() - drops_before;

    // N service registrations kept by one daemon: every container asks to
    // be published on port 80, where nothing listens, so the registrar
    // keeps checking all of them (every 250 ms while a service is not up).
    let processes = bench.containers(n);
    let mut registering = Vec::new();
    for (i, process) in processes.iter().enumerate() {
        let mut network = flat(i);
        network["macvlan.discover"] = "true".into();
        network["macvlan.port"] = "80".into();
        network["macvlan.service"] = format!("svc{i}").into();
        let sample = bench.hook(
            &bench.config,
            "createRuntime",
            &bench.state(
                &format!("reg-{i}"),
                "creating",
                Some(process.pid()),
                network,
            ),
        );
        registering.push((i + 1, sample.wall));
    }
    let daemon_with_registrations = watch_daemon(&bench.lab, Duration::from_secs(5));
    let seen = bench.addresses(&processes);
    let distinct_registrations = seen.iter().collect::<HashSet<_>>().len();
    let left_registrations = bench.tear_down(&bench.config, "reg", processes);

    let concurrent_label = format!("flat, {parallel} at a time");
    plot(
        &out_dir.join("scale-attach.svg"),
        &[
            ("flat, one after another", &sequential),
            (&concurrent_label, &concurrent),
            ("dhcp, one after another", &dhcp),
            ("flat + registration, one after another", &registering),
        ],
    );

    let mut report = String::new();
    let uname = Command::new("uname").arg("-srm").output().unwrap();
    let _ = writeln!(report, "# Scale: {n} containers on one host\n");
    let _ = writeln!(
        report,
        "The hook (a process per container, as runc runs it) attaches {n} containers \
         (processes with a network namespace of their own) to a flat network on one lab \
         host: one after another, then {parallel} at a time; then {dhcp_count} DHCP containers \
         against dnsmasq (--no-ping; probe_wait = 0s). Machine: {} cores, kernel {}.\n",
        std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(0),
        String::from_utf8_lossy(&uname.stdout).trim()
    );
    let _ = writeln!(
        report,
        "| run | containers | first 20, median ms | last 20, median ms | ratio (target ≤ 1.2) | distinct addresses | left after stop + gc |"
    );
    let _ = writeln!(report, "|---|---:|---:|---:|---:|---:|---|");
    for (name, times, distinct, left) in [
        (
            "flat, one after another",
            &sequential,
            distinct_sequential,
            &left_sequential,
        ),
        (
            &*format!("flat, {parallel} at a time"),
            &concurrent,
            distinct_parallel,
            &left_parallel,
        ),
        ("dhcp, one after another", &dhcp, distinct_dhcp, &left_dhcp),
        (
            "flat + service registration, one after another",
            &registering,
            distinct_registrations,
            &left_registrations,
        ),
    ] {
        let count = times.len();
        let first = window(times, 0..21);
        let last = window(times, count.saturating_sub(19)..count + 1);
        let _ = writeln!(
            report,
            "| {name} | {count} | {} | {} | **{:.2}** | {distinct} of {count} | {left} |",
            ms(first),
            ms(last),
            last.as_secs_f64() / first.as_secs_f64()
        );
    }
    let _ = writeln!(
        report,
        "\nEvery flat container had exactly the address it asked for: {all_right_sequential}. \
         The hook's peak RSS, the largest over the {n} sequential attaches: {} KiB. \
         `macvlan daemon` keeping {leases_held} DHCP leases (dnsmasq's count): \
         {daemon_with_leases}; leases left in dnsmasq after every container stopped: \
         {leases_after}; packets dropped from the kernel's input backlogs meanwhile: \
         {dhcp_drops} (net.core.netdev_max_backlog = {}: a broadcast from a macvlan in \
         bridge mode is copied to every other macvlan on the parent through that backlog). \
         The same daemon keeping {n} service registrations whose port never \
         answers (checked every 250 ms, 32 checks at a time): {daemon_with_registrations}.\n",
        hook_rss.max_rss_kib, backlog,
    );
    let _ = writeln!(
        report,
        "![attach time by container count](scale-attach.svg)"
    );
    std::fs::write(out_dir.join("scale.md"), &report).unwrap();
    print!("{report}");
    drop(server);
}
