//! CNI ADD at cluster scale (issue 15): two lab hosts against a 3-member
//! etcd cluster, N ADDs (half per host, 16 at a time per host) into one
//! network through macvlan-runc's CNI face, next to the CNI macvlan plugin
//! with host-local (per node, not cluster-wide) on the same lab and pods;
//! then one host "crashes" (ADDs killed mid-flight, its namespaces gone)
//! and the GC its runtime runs afterwards releases everything it held;
//! then the pool is filled exactly and the next ADD must fail at once.
//! Writes `cni.md`.
//!
//! `cargo bench --bench cni -- [--pods N] [--out DIR]` (default 1000), as root.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use common::{must, run, text, Lab, MACVLAN, UPLINK};
use serde_json::{json, Value};

const CNI_MACVLAN: &str = "/usr/lib/cni/macvlan";
const PER_HOST_CONCURRENCY: usize = 16;

fn argument(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Pod namespaces, deleted on drop (also on a panic).
struct Pods(Vec<String>);

impl Drop for Pods {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// One plugin invocation from `host`'s namespace: exit code, output, time.
fn invoke(
    lab: &Lab,
    host: &str,
    plugin: &str,
    (command, container, netns): (&str, &str, &str),
    config: &Value,
) -> (i32, Value, Duration) {
    let started = Instant::now();
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.ns(host)))
        .arg(plugin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    let output = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), output, elapsed)
}

/// What a batch of ADDs did.
#[derive(Default)]
struct Batch {
    latencies: Vec<Duration>,
    addresses: Vec<String>,
    failures: Vec<String>,
    wall: Duration,
}

/// `per_host` ADDs on each of `hosts` at once, 16 at a time per host; pod
/// `i` of host `h` is `pods[h * per_host + i]`.
fn add_all(
    lab: &Lab,
    hosts: &[&str],
    pods: &[String],
    per_host: usize,
    plugin: &str,
    config_of: &(dyn Fn(&str) -> Value + Sync),
) -> Batch {
    let batch = Mutex::new(Batch::default());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (h, host) in hosts.iter().enumerate() {
            let next = std::sync::Arc::new(AtomicUsize::new(0));
            for _ in 0..PER_HOST_CONCURRENCY {
                let next = next.clone();
                let batch = &batch;
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= per_host {
                        return;
                    }
                    let pod = &pods[h * per_host + i];
                    let netns = format!("/run/netns/{pod}");
                    let (code, output, took) =
                        invoke(lab, host, plugin, ("ADD", pod, &netns), &config_of(host));
                    let mut b = batch.lock().unwrap();
                    b.latencies.push(took);
                    match (code, output["ips"][0]["address"].as_str()) {
                        (0, Some(address)) => b.addresses.push(address.to_string()),
                        _ => b.failures.push(format!("{pod}: {output}")),
                    }
                });
            }
        }
    });
    let mut batch = batch.into_inner().unwrap();
    batch.wall = started.elapsed();
    batch.latencies.sort();
    batch
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(((sorted.len() as f64) - 1.0) * p / 100.0).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// The prefix length of the smallest subnet with at least `n` addresses
/// for containers (besides network, broadcast and gateway).
fn prefix_for(n: usize) -> u8 {
    let mut prefix = 30u8;
    while (1usize << (32 - prefix)) < n + 3 {
        prefix -= 1;
    }
    prefix
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pods_total: usize = argument(&args, "--pods")
        .map(|n| n.parse().expect("--pods N"))
        .unwrap_or(1000);
    let per_host = pods_total / 2;
    let out = PathBuf::from(argument(&args, "--out").unwrap_or_else(|| "bench-results".into()));
    std::fs::create_dir_all(&out).unwrap();

    let lab = Lab::new(&["hA", "hB"]);
    let cluster = EtcdCluster::start(&lab, 3, "");
    // One network for the whole cluster, a /22 for 1,000 pods: 1,021
    // addresses for containers (the first is the gateway).
    let prefix = prefix_for(per_host * 2 + 16);
    let subnet = format!("198.18.0.0/{prefix}");
    let created = lab.macvlan(
        "hA",
        &[
            "network", "create", "pool", "--parent", UPLINK, "--subnet", &subnet,
        ],
    );
    assert!(created.status.success(), "{}", text(&created));
    let capacity = (1usize << (32 - prefix)) - 3;

    let hosts = ["hA", "hB"];
    let mut names = Vec::new();
    for host in hosts {
        for i in 0..per_host {
            names.push(format!("{}-{host}p{i}", lab.name));
        }
    }
    let pods = Pods(names.clone());
    let started = Instant::now();
    for name in &pods.0 {
        must("ip", &["netns", "add", name]);
    }
    let netns_made = started.elapsed();

    // The CNI macvlan plugin with host-local first (per node: each host
    // its own range and data directory), then DEL, on the same pods.
    let theirs = |host: &str| {
        json!({
            "cniVersion": "1.0.0", "name": "theirs", "type": "macvlan", "master": UPLINK,
            "ipam": {"type": "host-local", "dataDir": lab.dir.path().join(format!("host-local-{host}")),
                     "ranges": [[{"subnet": if host == "hA" { "198.19.0.0/22" } else { "198.19.4.0/22" }}]]}
        })
    };
    let cni = add_all(&lab, &hosts, &names, per_host, CNI_MACVLAN, &theirs);
    for (h, host) in hosts.iter().enumerate() {
        for i in 0..per_host {
            let pod = &names[h * per_host + i];
            invoke(
                &lab,
                host,
                CNI_MACVLAN,
                ("DEL", pod, &format!("/run/netns/{pod}")),
                &theirs(host),
            );
        }
    }

    // Ours: cluster-wide allocation from the one network.
    let ours_conf = |host: &str| {
        json!({"cniVersion": "1.0.0", "name": "pool", "type": "macvlan-runc", "network": "pool",
               "config": lab.config_path(host)})
    };
    let ours = add_all(&lab, &hosts, &names, per_host, MACVLAN, &ours_conf);
    let unique: BTreeSet<&String> = ours.addresses.iter().collect();
    let duplicates = ours.addresses.len() - unique.len();
    let keys_after_adds = cluster.keys("/macvlan/ipam/pool/").len();

    // hB crashes: more ADDs there killed mid-flight, then every namespace
    // of hB gone; its runtime, back, runs GC with no valid attachment.
    let crash_pods: Vec<String> = (0..PER_HOST_CONCURRENCY)
        .map(|i| format!("{}-hBc{i}", lab.name))
        .collect();
    for name in &crash_pods {
        must("ip", &["netns", "add", name]);
    }
    let crash_guard = Pods(crash_pods.clone());
    let mut children = Vec::new();
    for pod in &crash_pods {
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.ns("hB")))
            .arg(MACVLAN)
            .env_clear()
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", pod)
            .env("CNI_NETNS", format!("/run/netns/{pod}"))
            .env("CNI_IFNAME", "eth0")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(ours_conf("hB").to_string().as_bytes());
        children.push(child);
    }
    std::thread::sleep(Duration::from_millis(15));
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    drop(crash_guard);
    for name in &names[per_host..] {
        let _ = run("ip", &["netns", "del", name]);
    }
    let gc_started = Instant::now();
    let mut gc_conf = ours_conf("hB");
    gc_conf["cni.dev/valid-attachments"] = json!([]);
    let (gc_code, gc_output, _) = invoke(&lab, "hB", MACVLAN, ("GC", "", ""), &gc_conf);
    let gc_took = gc_started.elapsed();
    assert_eq!(gc_code, 0, "GC: {gc_output}");
    let records = |host: &str| {
        let out = lab.macvlan(host, &["ls", "--json"]);
        let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        all.into_iter().filter(|r| r["host"] == host).count()
    };
    let hb_left = records("hB");
    let ha_records = records("hA");
    let keys_after_gc = cluster.keys("/macvlan/ipam/pool/").len();
    let leaks = keys_after_gc.saturating_sub(ha_records);

    // Fill the pool exactly, then one more ADD.
    let free = capacity - keys_after_gc;
    let fill: Vec<String> = (0..free).map(|i| format!("{}-hBf{i}", lab.name)).collect();
    for name in &fill {
        must("ip", &["netns", "add", name]);
    }
    let fill_guard = Pods(fill.clone());
    let filled = add_all(&lab, &["hB"], &fill, free, MACVLAN, &ours_conf);
    let extra = format!("{}-hBx", lab.name);
    must("ip", &["netns", "add", &extra]);
    let extra_guard = Pods(vec![extra.clone()]);
    let (full_code, full_output, full_took) = invoke(
        &lab,
        "hB",
        MACVLAN,
        ("ADD", &extra, &format!("/run/netns/{extra}")),
        &ours_conf("hB"),
    );
    drop(extra_guard);
    drop(fill_guard);

    let mut report = String::new();
    let _ = writeln!(
        report,
        "# CNI ADD at cluster scale: macvlan-runc on etcd vs CNI macvlan + host-local\n"
    );
    let _ = writeln!(
        report,
        "{} pods, {per_host} per lab host on two hosts, {PER_HOST_CONCURRENCY} ADDs at a time per host, \
         each a plugin process as a runtime runs it (environment, stdin), into one network \
         ({subnet}, {capacity} addresses for containers) on a 3-member etcd 3.4 cluster. The CNI \
         macvlan plugin with host-local ran first on the same pods and lab, each host with its own \
         range (host-local is per node: it cannot share a pool across hosts). Creating the {} \
         namespaces took {:.1} s (not counted). Machine: {} cores.\n",
        per_host * 2,
        per_host * 2,
        netns_made.as_secs_f64(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let _ = writeln!(
        report,
        "| | time to all ADDs s | ADD p50 ms | ADD p99 ms | failures | duplicates |"
    );
    let _ = writeln!(report, "|---|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        report,
        "| macvlan-runc CNI, cluster-wide (etcd) | {:.1} | {} | {} | {} | {duplicates} |",
        ours.wall.as_secs_f64(),
        ms(percentile(&ours.latencies, 50.0)),
        ms(percentile(&ours.latencies, 99.0)),
        ours.failures.len()
    );
    let _ = writeln!(
        report,
        "| CNI macvlan + host-local, per node | {:.1} | {} | {} | {} | — |",
        cni.wall.as_secs_f64(),
        ms(percentile(&cni.latencies, 50.0)),
        ms(percentile(&cni.latencies, 99.0)),
        cni.failures.len()
    );
    let _ = writeln!(
        report,
        "\nAddress keys in etcd after the ADDs: {keys_after_adds} (one per pod).\n\n\
         **Crash**: {PER_HOST_CONCURRENCY} more ADDs on hB were killed ~15 ms in, then every namespace of hB \
         went; the GC hB's runtime runs when it is back (no valid attachment) took {} ms. Left after it: \
         {hb_left} records of hB, {keys_after_gc} address keys for {ha_records} records of hA — **{leaks} leaked**.\n\n\
         **Exactly full**: {free} more ADDs filled the pool ({} failures, p50 {} ms); the next ADD \
         {} in {} ms: `{}`.",
        ms(gc_took),
        filled.failures.len(),
        ms(percentile(&filled.latencies, 50.0)),
        if full_code == 0 { "succeeded (a bug)" } else { "failed" },
        ms(full_took),
        full_output["msg"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        report,
        "\nFor context only (not measured here): spiderpool's published comparison timed 1,000 \
         macvlan + whereabouts pods at 2,529 s to running (182 s for spiderpool), on a cluster, \
         including everything else a pod start does."
    );
    if !ours.failures.is_empty() {
        let _ = writeln!(report, "\nFirst failure: `{}`", ours.failures[0]);
    }
    std::fs::write(out.join("cni.md"), &report).unwrap();
    print!("{report}");
    assert_eq!(duplicates, 0, "duplicate addresses");
    assert_eq!(full_output["code"], 101, "{full_output}");
    drop(pods);
    drop(cluster);
    drop(lab);
}
