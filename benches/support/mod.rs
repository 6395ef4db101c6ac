//! What the control-plane benchmarks share: timing a child process (wall
//! time and its own peak RSS), series of samples and their percentiles.
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
