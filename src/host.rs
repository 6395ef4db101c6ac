//! This host's identity in records: persistent across renames, unlike the
//! hostname (which stays in records for display).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::config::{Config, StoreLocation};

const MACHINE_ID: &str = "/etc/machine-id";
const STATE_DIR: &str = "/var/lib/macvlan-runc";

#[derive(Debug, thiserror::Error)]
pub enum HostIdError {
    #[error("no /etc/machine-id and cannot keep a host id in {path}: {source}")]
    Keep {
        path: String,
        source: std::io::Error,
    },
}

/// This boot of the kernel (`/proc/sys/kernel/random/boot_id`): records and
/// registrations carry it, and a pid or namespace inode recorded in another
/// boot says nothing about what runs now (both are reused after a reboot).
pub fn boot_id() -> Option<&'static str> {
    static BOOT_ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|id| id.trim().to_string())
                .filter(|id| !id.is_empty())
        })
        .as_deref()
}

/// Whether something recorded with `recorded` (none: written before boot
/// ids were recorded) belongs to this boot.
pub fn this_boot(recorded: Option<&str>) -> bool {
    match (recorded, boot_id()) {
        (Some(recorded), Some(current)) => recorded == current,
        _ => true,
    }
}

/// The configured `host_id`, else /etc/machine-id, else a UUID made once
/// and kept in `host-id` beside the SQLite state (or in /var/lib/macvlan-runc).
pub fn host_id(config: &Config) -> Result<String, HostIdError> {
    if let Some(id) = &config.host_id {
        return Ok(id.clone());
    }
    if let Some(id) = read_id(Path::new(MACHINE_ID)) {
        return Ok(id);
    }
    let dir = match &config.store {
        StoreLocation::Sqlite(path) => path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(STATE_DIR)),
        StoreLocation::Etcd(_) => PathBuf::from(STATE_DIR),
    };
    kept_id(&dir.join("host-id"))
}

/// The first line of `path` when it is a usable id.
fn read_id(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let id = text.lines().next()?.trim();
    let valid = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    valid.then(|| id.to_string())
}

/// The id in `path`, made there first if there is none. Several hooks may
/// race to make it: each writes its own candidate to a temporary file and
/// hard-links it into place, which fails for all but the first.
fn kept_id(path: &Path) -> Result<String, HostIdError> {
    if let Some(id) = read_id(path) {
        return Ok(id);
    }
    let fail = |source| HostIdError::Keep {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(fail)?;
    let candidate: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let temporary = dir.join(format!(".host-id.{candidate}"));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        writeln!(file, "{candidate}")?;
        file.sync_all()?;
        match std::fs::hard_link(&temporary, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&temporary);
    written.map_err(fail)?;
    read_id(path).ok_or_else(|| fail(std::io::Error::other("unreadable after writing")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_id_is_made_once_and_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/host-id");
        let first = kept_id(&path).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(kept_id(&path).unwrap(), first);
        let racers: Vec<String> = (0..8)
            .map(|_| {
                let path = dir.path().join("raced/host-id");
                std::thread::spawn(move || kept_id(&path).unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(racers.iter().all(|id| *id == racers[0]));
    }

    #[test]
    fn configured_id_wins() {
        let config = Config {
            host_id: Some("node-7".into()),
            ..Config::default()
        };
        assert_eq!(host_id(&config).unwrap(), "node-7");
    }
}
