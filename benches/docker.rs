//! Container start through Docker: `docker run --rm` with macvlan-runc and a
//! flat network, against plain `--net none` and against Docker's own macvlan
//! driver, interleaved on one lab in one run. Writes `bench-results/docker.md`.
//!
//! `scripts/bench.sh` runs it after the attach benchmark; alone:
//! `cargo bench --bench docker -- [--runs N] [--out DIR] [--targets]`
//! (default 60 runs; `--targets`: `--net none`, no network asked and a flat
//! network only).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::docker::{Dockerd, IMAGE};
use common::{Lab, GATEWAY, UPLINK};

/// The `docker run` options of one variant, for run number `i`.
type DockerArgs = Box<dyn Fn(usize) -> Vec<String>>;

fn argument(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn p90(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() as f64 - 1.0) * 0.9).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = argument(&args, "--runs")
        .and_then(|n| n.parse().ok())
        .unwrap_or(60);
    let out_dir = argument(&args, "--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-results"));
    std::fs::create_dir_all(&out_dir).unwrap();

    let lab = Lab::new(&["hA"]);
    // The same host's config with a runtime directory of its own, where a
    // `macvlan daemon` takes the hooks over (`[daemon] serve_hooks`); with
    // the host's own config no daemon runs and the hooks work alone.
    let served = lab.dir.path().join("served.toml");
    let text = std::fs::read_to_string(lab.config_path("hA")).unwrap();
    let runtime_dir = lab.daemon_dir("hA");
    let served_dir = lab.dir.path().join("run-served");
    let runtime_dir = format!("runtime_dir = \"{}\"", runtime_dir.display());
    assert!(text.contains(&runtime_dir), "{text}");
    std::fs::write(
        &served,
        text.replace(
            &runtime_dir,
            &format!("runtime_dir = \"{}\"", served_dir.display()),
        ),
    )
    .unwrap();
    let _daemon = lab.spawn(
        "hA",
        common::MACVLAN,
        &["--config", served.to_str().unwrap(), "daemon"],
    );
    let waited = Instant::now();
    while !served_dir.join("hooks.sock").exists() {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the daemon's socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Two ways to tell the runtime its config file: the environment
    // (dockerd runs containerd, which runs the shim, which runs the
    // runtime), or `runtimeArgs`, for which dockerd 20.10 puts a `/bin/sh`
    // script in front of the runtime (`<data-root>/runtimes/NAME`, not
    // exec'ing it): a shell and a fork more per runtime call.
    let docker = Dockerd::start_with(
        &lab,
        "hA",
        &[
            ("macvlan-runc-env", None),
            ("macvlan-runc-args", Some(&served)),
        ],
        &[("MACVLAN_CONFIG", &served)],
    );
    docker.must(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "192.0.2.0/24",
        "--gateway",
        GATEWAY,
        "-o",
        &format!("parent={UPLINK}"),
        "dockermv",
    ]);
    // Warm up image and caches once per variant.
    docker.must(&["run", "--rm", "--net", "none", IMAGE, "true"]);

    let flat = |runtime: &'static str, first: usize| -> DockerArgs {
        Box::new(move |i| {
            let ip = format!("IP=192.0.2.{}/24", first + (i % 60));
            [
                "--runtime",
                runtime,
                "--net",
                "none",
                "-e",
                "TYPE=flat",
                "-e",
                "HOSTIF=lan0",
                "-e",
                &ip,
                "-e",
                "GW=192.0.2.1",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        })
    };
    let variants: [(&str, DockerArgs); 6] = [
        (
            "docker run --net none (runc)",
            Box::new(|_| vec!["--net".into(), "none".into()]),
        ),
        (
            "docker run --runtime macvlan-runc --net none (no network asked)",
            Box::new(|_| {
                vec![
                    "--runtime".into(),
                    "macvlan-runc-env".into(),
                    "--net".into(),
                    "none".into(),
                ]
            }),
        ),
        (
            "docker run --runtime macvlan-runc --net none -e TYPE=flat … (ours, hooks served by the daemon)",
            flat("macvlan-runc-env", 10),
        ),
        (
            "the same, hooks alone, config as `runtimeArgs` (as packaged before)",
            flat("macvlan-runc", 70),
        ),
        (
            "the same served, config as `runtimeArgs` (dockerd's /bin/sh in front of each call)",
            flat("macvlan-runc-args", 130),
        ),
        (
            "docker run --net dockermv --ip … (Docker's macvlan driver)",
            Box::new(|i| {
                vec![
                    "--net".into(),
                    "dockermv".into(),
                    "--ip".into(),
                    format!("192.0.2.{}", 190 + (i % 60)),
                ]
            }),
        ),
    ];
    // `--targets`: only the variants issue 17's targets are about, for
    // more runs in the same time.
    let variants: Vec<(&str, DockerArgs)> = if args.iter().any(|a| a == "--targets") {
        variants.into_iter().take(3).collect()
    } else {
        variants.into()
    };
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    for i in 0..runs {
        // Rotate the order each round so no variant always runs first.
        for k in 0..variants.len() {
            let v = (i + k) % variants.len();
            let mut command = vec!["run".to_string(), "--rm".to_string()];
            command.extend((variants[v].1)(i));
            command.extend([IMAGE.to_string(), "true".to_string()]);
            let refs: Vec<&str> = command.iter().map(String::as_str).collect();
            let started = Instant::now();
            docker.must(&refs);
            samples[v].push(started.elapsed());
        }
    }

    let base = median(&samples[0]).as_secs_f64();
    let mut report = String::new();
    let _ = writeln!(report, "# Container start through Docker\n");
    let _ = writeln!(
        report,
        "`docker run --rm IMAGE true`, {runs} runs per variant, interleaved; dockerd 20.10 (Debian) \
         inside a lab namespace, vfs storage, busybox-static image; {} cores.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let _ = writeln!(report, "| variant | median ms | p90 ms | × `--net none` |");
    let _ = writeln!(report, "|---|---:|---:|---:|");
    for (v, (name, _)) in variants.iter().enumerate() {
        let m = median(&samples[v]);
        let _ = writeln!(
            report,
            "| {name} | {} | {} | {:.3} |",
            ms(m),
            ms(p90(&samples[v])),
            m.as_secs_f64() / base
        );
    }
    let _ = writeln!(
        report,
        "\nTargets (issue 17): no network asked ≤ 1.015 × `--net none`, a flat network ≤ 1.03 ×."
    );
    // Who did the flat variants' attaches, and how long the work took
    // (the attach line's duration_ms), from the host's log.
    let log = lab.log("hA");
    let attaches: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("event=attach "))
        .collect();
    let durations = |by_daemon: bool| -> Vec<f64> {
        let mut values: Vec<f64> = attaches
            .iter()
            .filter(|l| l.contains(" by=daemon") == by_daemon)
            .filter_map(|l| {
                l.split("duration_ms=")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        values.sort_by(f64::total_cmp);
        values
    };
    let median_of = |values: &[f64]| values.get(values.len() / 2).copied().unwrap_or(f64::NAN);
    let (served, alone) = (durations(true), durations(false));
    let _ = writeln!(
        report,
        "\nAttaches in the log: {} by the daemon (median {:.1} ms of work), {} by the hook itself \
         (median {:.1} ms).",
        served.len(),
        median_of(&served),
        alone.len(),
        median_of(&alone)
    );
    std::fs::write(out_dir.join("docker.md"), &report).unwrap();
    print!("{report}");
}
