//! The hooks' tally (issue 17): how long each attach, poststop and detach
//! took and where the failed ones failed, kept in a small file per host
//! (`<runtime_dir>/hook-tally`) that every hook process updates under a
//! lock, and that `macvlan daemon --metrics` serves as
//! `macvlan_hook_duration_seconds` and `macvlan_hook_failures_total`.
//!
//! A file rather than the daemon reading the log: the log may go to syslog
//! or stderr, where the daemon cannot read it back, and rotates; the daemon
//! need not run while containers start (it runs for DHCP and service
//! discovery only), and the file keeps counting without it, bounded in
//! size (one line per operation and failing step). Cost to a hook: an
//! open, a lock, a read and a write of a few hundred bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Upper bounds of the duration buckets, in seconds (attach is about 2 ms,
/// a DHCP attach or a detach tens of milliseconds, a silent DHCP server
/// seconds).
pub const BUCKETS: [f64; 11] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// What a hook process did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Attach,
    Poststop,
    Detach,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Attach => "attach",
            Operation::Poststop => "poststop",
            Operation::Detach => "detach",
        }
    }
}

/// One operation's durations: per bucket (not cumulative), count, sum.
#[derive(Debug, Clone, Default, PartialEq)]
struct Durations {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Everything counted on this host since the file was made (boot).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    durations: BTreeMap<String, Durations>,
    /// (operation, step) → failures.
    failures: BTreeMap<(String, String), u64>,
}

const HEADER: &str = "# macvlan-runc hook tally 1";

/// Where the tally of hosts with `config` is.
pub fn path(config: &crate::config::Config) -> PathBuf {
    config.daemon.runtime_dir.join("hook-tally")
}

impl Tally {
    /// Reads the file's text; lines it does not understand (a newer
    /// version's) are skipped.
    pub fn parse(text: &str) -> Tally {
        let mut tally = Tally::default();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["duration", op, count, sum, buckets @ ..] if buckets.len() == BUCKETS.len() => {
                    let parsed: Option<Vec<u64>> = buckets.iter().map(|b| b.parse().ok()).collect();
                    if let (Ok(count), Ok(sum), Some(parsed)) = (count.parse(), sum.parse(), parsed)
                    {
                        let mut durations = Durations {
                            count,
                            sum,
                            ..Durations::default()
                        };
                        durations.buckets.copy_from_slice(&parsed);
                        tally.durations.insert(op.to_string(), durations);
                    }
                }
                ["failure", op, step, n] => {
                    if let Ok(n) = n.parse() {
                        tally.failures.insert((op.to_string(), step.to_string()), n);
                    }
                }
                _ => {}
            }
        }
        tally
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut text = format!("{HEADER}\n");
        for (op, d) in &self.durations {
            let _ = write!(text, "duration {op} {} {}", d.count, d.sum);
            for b in d.buckets {
                let _ = write!(text, " {b}");
            }
            text.push('\n');
        }
        for ((op, step), n) in &self.failures {
            let _ = writeln!(text, "failure {op} {step} {n}");
        }
        text
    }

    /// Counts one operation.
    pub fn add(&mut self, operation: Operation, took: Duration, failed_step: Option<&str>) {
        let seconds = took.as_secs_f64();
        let d = self
            .durations
            .entry(operation.as_str().to_string())
            .or_default();
        d.count += 1;
        d.sum += seconds;
        if let Some(i) = BUCKETS.iter().position(|&upper| seconds <= upper) {
            d.buckets[i] += 1;
        }
        if let Some(step) = failed_step {
            // A step is a word of ours; keep the file's shape whatever it is.
            let step: String = step
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            *self
                .failures
                .entry((operation.as_str().to_string(), step))
                .or_default() += 1;
        }
    }

    /// The Prometheus text exposition of the tally.
    pub fn to_prometheus(&self) -> String {
        let mut text = String::from(
            "# HELP macvlan_hook_duration_seconds Attach, poststop and detach durations of this host's hooks, CNI calls and attach/detach commands, by operation\n\
             # TYPE macvlan_hook_duration_seconds histogram\n",
        );
        for (op, d) in &self.durations {
            let mut cumulative = 0;
            for (upper, n) in BUCKETS.iter().zip(d.buckets) {
                cumulative += n;
                let _ = writeln!(
                    text,
                    "macvlan_hook_duration_seconds_bucket{{operation=\"{op}\",le=\"{upper}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                text,
                "macvlan_hook_duration_seconds_bucket{{operation=\"{op}\",le=\"+Inf\"}} {}",
                d.count
            );
            let _ = writeln!(
                text,
                "macvlan_hook_duration_seconds_sum{{operation=\"{op}\"}} {}",
                d.sum
            );
            let _ = writeln!(
                text,
                "macvlan_hook_duration_seconds_count{{operation=\"{op}\"}} {}",
                d.count
            );
        }
        text.push_str(
            "# HELP macvlan_hook_failures_total Attaches, poststops and detaches that failed, by operation and the step that failed\n\
             # TYPE macvlan_hook_failures_total counter\n",
        );
        for ((op, step), n) in &self.failures {
            let _ = writeln!(
                text,
                "macvlan_hook_failures_total{{operation=\"{op}\",step=\"{step}\"}} {n}"
            );
        }
        text
    }
}

/// Reads the tally at `path` (empty when there is none yet).
pub fn read(path: &Path) -> Tally {
    std::fs::read_to_string(path)
        .map(|text| Tally::parse(&text))
        .unwrap_or_default()
}

/// Counts one operation in the file at `path`: under a lock on the file,
/// read it, add, and write the whole text back in one `pwrite` (counts only
/// grow, so the text never gets shorter). A process killed at any instant
/// has written all of it or nothing: a signal does not cut a write of a
/// few hundred bytes to a regular file in half, and a power loss empties
/// `/run` anyway. Not a new file and a rename: on ext4 a rename over a file
/// starts writing the new one out (auto_da_alloc), which a hook would pay
/// for each container. Counting never fails the operation: a problem is
/// returned for the caller to log.
pub fn record(
    path: &Path,
    operation: Operation,
    took: Duration,
    failed_step: Option<&str>,
) -> std::io::Result<()> {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let file = crate::files::in_dir(path, || crate::files::open_private(path))?;
    let file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| std::io::Error::from(errno))?;
    let mut text = String::new();
    (&*file).read_to_string(&mut text)?;
    let mut tally = Tally::parse(&text);
    tally.add(operation, took, failed_step);
    let new = tally.to_text();
    file.write_all_at(new.as_bytes(), 0)?;
    if new.len() < text.len() {
        file.set_len(new.len() as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_the_file_and_render_as_a_histogram() {
        let mut tally = Tally::default();
        tally.add(Operation::Attach, Duration::from_micros(1500), None);
        tally.add(
            Operation::Attach,
            Duration::from_millis(40),
            Some("setup after claim"),
        );
        tally.add(Operation::Poststop, Duration::from_secs(60), None);
        let again = Tally::parse(&tally.to_text());
        assert_eq!(again, tally);
        let text = again.to_prometheus();
        assert!(
            text.contains(
                "macvlan_hook_duration_seconds_bucket{operation=\"attach\",le=\"0.001\"} 0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "macvlan_hook_duration_seconds_bucket{operation=\"attach\",le=\"0.002\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "macvlan_hook_duration_seconds_bucket{operation=\"attach\",le=\"0.05\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "macvlan_hook_duration_seconds_bucket{operation=\"poststop\",le=\"30\"} 0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "macvlan_hook_duration_seconds_bucket{operation=\"poststop\",le=\"+Inf\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "macvlan_hook_failures_total{operation=\"attach\",step=\"setup_after_claim\"} 1\n"
            ),
            "{text}"
        );
        // Lines of another version are skipped, not fatal.
        assert_eq!(
            Tally::parse("garbage\nduration attach x y\n"),
            Tally::default()
        );
    }

    #[test]
    fn concurrent_processes_lose_no_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/hook-tally");
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..25 {
                        record(&path, Operation::Attach, Duration::from_millis(2), None).unwrap();
                    }
                });
            }
        });
        let tally = read(&path);
        assert_eq!(tally.durations["attach"].count, 200);
    }
}
