//! One structured line per attach and detach (logfmt: `key=value`), to a
//! file, to syslog/journald, or to stderr. Runtimes hide a hook's output, so
//! this log is what operators debug from.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;

use crate::config::LogTarget;

static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Marks the start of `main`, from which the debug timings count.
pub fn mark_start() {
    STARTED.get_or_init(std::time::Instant::now);
}

/// Milliseconds since `mark_start` (0 where it was not called).
pub fn since_start_ms() -> f64 {
    STARTED
        .get()
        .map(|t| t.elapsed().as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// syslog severity (RFC 5424).
    fn severity(self) -> u8 {
        match self {
            Level::Debug => 7,
            Level::Info => 6,
            Level::Warn => 4,
            Level::Error => 3,
        }
    }
}

#[derive(Clone)]
pub struct Logger {
    target: LogTarget,
    debug: bool,
}

/// Quotes a logfmt value when it needs it.
fn quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'=' && b != b'\\')
    {
        value.to_string()
    } else {
        format!("{value:?}")
    }
}

impl Logger {
    pub fn new(target: LogTarget, debug: bool) -> Logger {
        Logger { target, debug }
    }

    pub fn debug_enabled(&self) -> bool {
        self.debug
    }

    /// Writes one line: `ts=… level=… event=… key=value…`. Logging never
    /// fails the caller: a log that cannot be written is reported on stderr.
    pub fn log(&self, level: Level, event: &str, fields: &[(&str, &str)]) {
        if level == Level::Debug && !self.debug {
            return;
        }
        let mut line = String::new();
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let _ = write!(
            line,
            "ts={now} level={} event={}",
            level.as_str(),
            quote(event)
        );
        for (key, value) in fields {
            let _ = write!(line, " {key}={}", quote(value));
        }
        let result = match &self.target {
            LogTarget::Stderr => writeln!(std::io::stderr(), "{line}"),
            LogTarget::File(path) => {
                // The directory is made only when missing: every hook
                // writes a few lines, each opened anew (rotation-safe).
                let file = crate::files::in_dir(path, || {
                    crate::files::open_append(path, crate::files::LOG)
                });
                // One write() of a whole line with O_APPEND: lines from
                // concurrent hooks do not interleave.
                file.and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()))
            }
            LogTarget::Syslog => {
                // facility daemon (3)
                let priority = 3 * 8 + level.severity();
                let message = format!("<{priority}>macvlan[{}]: {line}", std::process::id());
                UnixDatagram::unbound()
                    .and_then(|socket| socket.send_to(message.as_bytes(), "/dev/log"))
                    .map(|_| ())
            }
        };
        if let Err(e) = result {
            eprintln!("macvlan: cannot write log ({e}): {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_logfmt_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let logger = Logger::new(LogTarget::File(path.clone()), false);
        logger.log(
            Level::Info,
            "attach",
            &[("container", "c1"), ("error", "a b=\"c\"")],
        );
        logger.log(Level::Debug, "hidden", &[]);
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(text.lines().count(), 1);
        // A log in a directory not made yet.
        let deeper = dir.path().join("a/b/log");
        Logger::new(LogTarget::File(deeper.clone()), false).log(Level::Info, "x", &[]);
        assert!(std::fs::read_to_string(deeper).unwrap().contains("event=x"));
        assert!(
            text.contains("level=info event=attach container=c1 error=\"a b=\\\"c\\\"\""),
            "{text}"
        );
    }
}
