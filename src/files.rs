//! Files this program creates, with explicit modes and without following
//! links planted at their names (issue 16): state and locks 0600, logs
//! 0640, directories 0750.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The store's database (SQLite gives its WAL and shared-memory files the
/// database's mode), locks, pid files.
pub const PRIVATE: u32 = 0o600;
/// Log files: the owner writes, its group (adm, say) reads.
pub const LOG: u32 = 0o640;
/// Directories this program makes (state, runtime).
pub const DIRECTORY: u32 = 0o750;

/// Creates `dir` and its missing parents with mode 0750; directories that
/// exist keep theirs (the package or the operator chose them).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIRECTORY)
        .create(dir)
}

/// Creates a new file at `path` with `mode`: never an existing file, never
/// through a symbolic link (O_EXCL | O_NOFOLLOW). A name already taken —
/// a leftover of a crash, or a link someone planted — is unlinked (which
/// removes the link itself, not its target) and tried once more.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            open()
        }
        other => other,
    }
    .and_then(|file| {
        // The umask may have taken bits away; the mode is what was asked.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        Ok(file)
    })
}

/// Opens `path` for appending, creating it with `mode`; a symbolic link
/// at that name is refused (ELOOP).
pub fn open_append(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens (creating it 0600) a lock or a small state file for reading and
/// writing in place, not through a link.
pub fn open_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(PRIVATE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Runs `create`, which makes a file at `path`; when that fails because
/// the file's directory is missing, makes the directory (0750) and runs it
/// once more. Short-lived processes (every hook) skip the mkdir then.
pub fn in_dir<T>(path: &Path, create: impl Fn() -> io::Result<T>) -> io::Result<T> {
    match (create(), path.parent()) {
        (Err(e), Some(dir)) if e.kind() == io::ErrorKind::NotFound => {
            create_dir(dir)?;
            create()
        }
        (result, _) => result,
    }
}

/// Replaces `path` with `contents` through a new file beside it (named
/// `temporary`, created as [`create_new`] does) and a rename.
pub fn replace(path: &Path, temporary: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let result = (|| {
        let mut file = create_new(temporary, mode)?;
        file.write_all(contents)?;
        std::fs::rename(temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(temporary);
    }
    result
}

/// Whether a file is readable by users other than its owner and group
/// (a password file should not be).
pub fn readable_by_others(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_planted_link_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let temporary = dir.path().join(".target.tmp");
        std::os::unix::fs::symlink(&victim, &temporary).unwrap();
        let target = dir.path().join("target");
        replace(&target, &temporary, b"new", PRIVATE).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o600);
        assert!(!temporary.exists());
    }

    #[test]
    fn modes_are_what_was_asked_and_links_refused_for_appending() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sub/dir/log");
        create_dir(log.parent().unwrap()).unwrap();
        assert_eq!(
            std::fs::metadata(log.parent().unwrap()).unwrap().mode() & 0o777,
            0o750 & !current_umask()
        );
        open_append(&log, LOG).unwrap();
        assert_eq!(
            std::fs::metadata(&log).unwrap().mode() & 0o777,
            0o640 & !current_umask()
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&log, &link).unwrap();
        assert_eq!(
            open_append(&link, LOG).unwrap_err().raw_os_error(),
            Some(libc::ELOOP)
        );
    }

    fn current_umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
            .unwrap_or(0o022)
    }
}
