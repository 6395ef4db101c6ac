//! What the control-plane benchmarks share: their arguments, timing a child
//! process (wall time and its own peak RSS), series of samples and their
//! percentiles, a CNI plugin call, a running process's memory.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One timed child process: wall time, peak RSS (KiB), success.
pub struct Sample {
    pub wall: Duration,
    pub max_rss_kib: i64,
}

// The child is reaped by wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn timed(mut command: Command, stdin: &str) -> Sample {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // wait4 for the child's own peak RSS.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(waited, pid);
    let mut out = String::new();
    use std::io::Read;
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.stderr.take().unwrap().read_to_string(&mut out);
    let exit = std::process::ExitStatus::from_raw(status);
    assert!(exit.success(), "{command:?} failed: {out}");
    Sample {
        wall,
        max_rss_kib: usage.ru_maxrss,
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[derive(Default)]
pub struct Series {
    pub walls: Vec<Duration>,
    pub max_rss_kib: i64,
}

impl Series {
    pub fn push(&mut self, sample: Sample) {
        self.walls.push(sample.wall);
        self.max_rss_kib = self.max_rss_kib.max(sample.max_rss_kib);
    }
    pub fn median(&self) -> Duration {
        let mut s = self.walls.clone();
        s.sort();
        percentile(&s, 50.0)
    }
    pub fn p99(&self) -> Duration {
        let mut s = self.walls.clone();
        s.sort();
        percentile(&s, 99.0)
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// The value after `name` on the command line.
pub fn argument(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// One timed CNI call of `plugin` (`verb` = ADD or DEL) for the namespace
/// of process `pid`, with the network configuration `config` on stdin.
pub fn cni(plugin: &str, verb: &str, id: &str, pid: u32, config: &str) -> Sample {
    let mut command = Command::new(plugin);
    command
        .env_clear()
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", format!("/proc/{pid}/ns/net"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni");
    timed(command, config)
}

/// Peak and current RSS (KiB) of a running process.
pub fn rss_kib(pid: i32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}
