//! The etcd store on the lab, against a 3-member etcd 3.4 cluster: address
//! allocation throughput from one VLAN pool with 1, 4 and 16 concurrent
//! clients (spread over two lab hosts), and the hook's attach time with
//! etcd next to the embedded store, interleaved in one run. Writes
//! `bench-results/etcd.md`.
//!
//! `cargo bench --bench etcd -- [--allocations N] [--attaches M] [--out DIR]`
//! (defaults 400 and 100), as root; `scripts/bench.sh` runs it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::etcd::{allocate_concurrently, EtcdCluster};
use common::{text, Lab, UPLINK};

fn argument(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[(((sorted.len() as f64) - 1.0) * p / 100.0).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let allocations: usize = argument(&args, "--allocations")
        .map(|n| n.parse().expect("--allocations N"))
        .unwrap_or(400);
    let attaches: usize = argument(&args, "--attaches")
        .map(|n| n.parse().expect("--attaches N"))
        .unwrap_or(100)
        .min(200);
    let out = PathBuf::from(argument(&args, "--out").unwrap_or_else(|| "bench-results".into()));

    let lab = Lab::new(&["hA", "hB"]);
    // The embedded store for the comparison: hA's config before etcd.
    let sqlite_config = lab.dir.path().join("config-sqlite.toml");
    std::fs::copy(lab.config_path("hA"), &sqlite_config).unwrap();
    let cluster = EtcdCluster::start(&lab, 3, "");

    let mut report = String::new();
    let _ = writeln!(
        report,
        "# etcd store: allocation throughput and attach time\n"
    );
    let _ = writeln!(
        report,
        "A 3-member etcd 3.4 cluster (Debian etcd-server) in the lab's gateway namespace, \
         reached over the lab switch; clients in the namespaces of two lab hosts, each with \
         its own connection. Machine: {} cores, kernel {}.\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        String::from_utf8_lossy(
            &std::process::Command::new("uname")
                .arg("-r")
                .output()
                .unwrap()
                .stdout
        )
        .trim()
    );
    let _ = writeln!(
        report,
        "## Allocation from one VLAN pool ({allocations} addresses each)\n"
    );
    let _ = writeln!(
        report,
        "Each allocation: list the pool's held addresses, then one create-if-absent \
         transaction for the lowest free one (after a lost race, one of the next 32 at random).\n"
    );
    let _ = writeln!(
        report,
        "| clients | allocations/s | median ms | p99 ms | retried errors |"
    );
    let _ = writeln!(report, "|---:|---:|---:|---:|---:|");
    for (i, clients) in [1usize, 4, 16].into_iter().enumerate() {
        let name = format!("pool{clients}");
        let out = lab.macvlan(
            "hA",
            &[
                "vlan",
                "create",
                "--name",
                &name,
                "--subnet",
                &format!("198.18.{}.0/20", 16 * i),
                "--host-interface",
                UPLINK,
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        let started = Instant::now();
        let results =
            allocate_concurrently(&lab, &["hA", "hB"], &name, clients, allocations, 5, |_| {});
        let wall = started.elapsed();
        assert!(
            results.iter().all(|a| a.address.is_some()),
            "an allocation failed"
        );
        let latencies: Vec<Duration> = results.iter().map(|a| a.latency).collect();
        let errors: usize = results.iter().map(|a| a.errors.len()).sum();
        let _ = writeln!(
            report,
            "| {clients} | {:.0} | {} | {} | {errors} |",
            allocations as f64 / wall.as_secs_f64(),
            ms(percentile(&latencies, 50.0)),
            ms(percentile(&latencies, 99.0)),
        );
        eprintln!(
            "{clients} clients: {:.0}/s",
            allocations as f64 / wall.as_secs_f64()
        );
    }

    // Attach through `macvlan attach --pid` (the hook's code), one process
    // per container, etcd and SQLite interleaved.
    let mut etcd_times = Vec::new();
    let mut sqlite_times = Vec::new();
    let mut processes = Vec::new();
    for i in 0..attaches {
        for (backend, config) in [
            ("etcd", lab.config_path("hA")),
            ("sqlite", sqlite_config.clone()),
        ] {
            let process = lab.netns_process("hA");
            let address = format!("192.0.2.{}/24", 10 + i);
            // Each backend its own addresses: the two stores do not share them.
            let address = if backend == "etcd" {
                address
            } else {
                format!("203.0.113.{}/24", 10 + i)
            };
            let started = Instant::now();
            let out = std::process::Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", lab.ns("hA")))
                .arg(common::MACVLAN)
                .arg("--config")
                .arg(&config)
                .args([
                    "attach",
                    "--pid",
                    &process.pid().to_string(),
                    "--type",
                    "flat",
                    "--host-interface",
                    UPLINK,
                    "--ip",
                    &address,
                    "--id",
                    &format!("{backend}{i}"),
                ])
                .output()
                .unwrap();
            let took = started.elapsed();
            assert!(out.status.success(), "{backend} attach: {}", text(&out));
            if backend == "etcd" {
                etcd_times.push(took);
            } else {
                sqlite_times.push(took);
            }
            processes.push(process);
        }
    }
    let _ = writeln!(
        report,
        "\n## Attach time, etcd next to the embedded store ({attaches} each)\n"
    );
    let _ = writeln!(
        report,
        "`macvlan attach --pid` (the hook's code path) as a process per container, flat \
         network, interleaved. VLAN attach adds only the sub-interface lookup to this, but \
         this machine's kernel has no 802.1Q, so it is not timed here (the VLAN data path \
         runs in a QEMU guest under TCG, where times say nothing about real hardware).\n"
    );
    let _ = writeln!(report, "| store | median ms | p99 ms |");
    let _ = writeln!(report, "|---|---:|---:|");
    for (name, times) in [("etcd (3 members)", &etcd_times), ("SQLite", &sqlite_times)] {
        let _ = writeln!(
            report,
            "| {name} | {} | {} |",
            ms(percentile(times, 50.0)),
            ms(percentile(times, 99.0))
        );
    }
    let _ = writeln!(
        report,
        "\nRatio etcd / SQLite (median): {:.2}×",
        percentile(&etcd_times, 50.0).as_secs_f64() / percentile(&sqlite_times, 50.0).as_secs_f64()
    );
    drop(processes);
    drop(cluster);
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("etcd.md"), &report).unwrap();
    println!("{report}");
}
