//! The container's /etc/resolv.conf from a DHCP lease (`network create
//! --dhcp-dns`, issue 16): the engine's file bind-mounted there, or the
//! rootfs's own — never a file of the host — written with what it held
//! kept in the record, and put back at stop.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::record::DhcpLease;

/// Where the container's resolv.conf is on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Place {
    /// The file the engine bind-mounts at /etc/resolv.conf (Docker's and
    /// podman's per-container copy).
    Bind { source: PathBuf },
    /// `etc/resolv.conf` inside the container's rootfs, resolved as the
    /// container would (its symbolic links stay inside the rootfs).
    Rootfs { root: PathBuf },
}

/// What was written, for the stop to put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    pub place: Place,
    /// The file's contents before (none: it did not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
}

/// Host paths a bind source may never be: the host's own resolver files.
const HOST_FILES: &[&str] = &["/etc/", "/run/systemd/", "/run/resolvconf/"];

impl Place {
    /// From the bundle's config.json: the bind mount at /etc/resolv.conf,
    /// else the rootfs (relative to `bundle` unless absolute).
    pub fn from_bundle(bundle: &Path, config: &serde_json::Value) -> Option<Place> {
        let bind = config
            .get("mounts")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter(|m| m.get("destination").and_then(|d| d.as_str()) == Some("/etc/resolv.conf"))
            .filter_map(|m| m.get("source").and_then(|s| s.as_str()))
            .next_back();
        if let Some(source) = bind {
            return Some(Place::Bind {
                source: PathBuf::from(source),
            });
        }
        let root = config.pointer("/root/path")?.as_str()?;
        let root = Path::new(root);
        Some(Place::Rootfs {
            root: if root.is_absolute() {
                root.to_path_buf()
            } else {
                bundle.join(root)
            },
        })
    }

    fn describe(&self) -> String {
        match self {
            Place::Bind { source } => source.display().to_string(),
            Place::Rootfs { root } => format!("{}/etc/resolv.conf", root.display()),
        }
    }

    /// Opens the file for reading and writing, creating it (0644): a bind
    /// source must be a plain file outside the host's resolver paths and is
    /// not followed if a link; in a rootfs, every link resolves inside it
    /// (openat2 RESOLVE_IN_ROOT).
    fn open(&self) -> Result<File> {
        match self {
            Place::Bind { source } => {
                let real = source
                    .canonicalize()
                    .with_context(|| format!("resolve {}", source.display()))?;
                let text = real.to_string_lossy();
                if HOST_FILES.iter().any(|p| text.starts_with(p)) || !real.is_absolute() {
                    bail!(
                        "{} is bind-mounted at /etc/resolv.conf and is a file of the host ({}); it is left alone",
                        source.display(),
                        real.display()
                    );
                }
                use std::os::unix::fs::OpenOptionsExt;
                Ok(std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&real)?)
            }
            Place::Rootfs { root } => {
                let dir = File::open(root).with_context(|| format!("open {}", root.display()))?;
                // struct open_how (openat2(2)); libc's is non-exhaustive.
                #[repr(C)]
                struct OpenHow {
                    flags: u64,
                    mode: u64,
                    resolve: u64,
                }
                let how = OpenHow {
                    flags: (libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC) as u64,
                    mode: 0o644,
                    resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
                };
                let name = c"etc/resolv.conf";
                // SAFETY: openat2 with a valid directory descriptor, a NUL-
                // terminated path and an open_how of the size passed.
                let fd = unsafe {
                    libc::syscall(
                        libc::SYS_openat2,
                        dir.as_raw_fd(),
                        name.as_ptr(),
                        &how as *const OpenHow,
                        std::mem::size_of::<OpenHow>(),
                    )
                };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error().into());
                }
                // SAFETY: a descriptor openat2 just returned, owned here.
                Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
            }
        }
    }
}

/// The resolv.conf a lease gives: its DNS servers and its domain.
pub fn contents(lease: &DhcpLease) -> String {
    let mut text = format!(
        "# written by macvlan-runc from the DHCP lease of {} (server {})\n",
        lease.address, lease.server
    );
    for server in &lease.dns {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if let Some(domain) = lease.domain.as_deref().filter(|d| valid_domain(d)) {
        text.push_str(&format!("search {domain}\n"));
    }
    text
}

/// A domain as a resolver file may carry it (a server's option 15 is not
/// trusted to be one: no spaces, no newlines).
fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Writes the lease's resolver settings at `place`; returns what to put
/// back. A lease without DNS servers writes nothing.
pub fn write(place: &Place, lease: &DhcpLease) -> Result<Option<Written>> {
    if lease.dns.is_empty() {
        return Ok(None);
    }
    let what = place.describe();
    let mut file = place.open().with_context(|| format!("open {what}"))?;
    let mut before = String::new();
    file.read_to_string(&mut before)
        .with_context(|| format!("read {what}"))?;
    let existed = file.metadata()?.len() > 0 || !before.is_empty();
    if let Err(e) = replace_contents(&mut file, &contents(lease)) {
        // Leave nothing half-written behind.
        let _ = replace_contents(&mut file, &before);
        return Err(e).with_context(|| format!("write {what}"));
    }
    Ok(Some(Written {
        place: place.clone(),
        original: existed.then_some(before),
    }))
}

/// Puts back what `written` replaced (an empty file for one that did not
/// exist); a file that is gone with its container is fine.
pub fn restore(written: &Written) -> Result<()> {
    let mut file = match written.place.open() {
        Ok(file) => file,
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
        {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    replace_contents(&mut file, written.original.as_deref().unwrap_or_default())
        .with_context(|| format!("put back {}", written.place.describe()))
}

fn replace_contents(file: &mut File, text: &str) -> std::io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> DhcpLease {
        DhcpLease {
            address: "192.0.2.100/24".into(),
            server: "192.0.2.1".parse().unwrap(),
            router: None,
            dns: vec!["192.0.2.53".parse().unwrap()],
            domain: Some("lab.example".into()),
            obtained_at: 0,
            lease_time: 120,
            renew_at: 60,
            rebind_at: 105,
            expires_at: 120,
        }
    }

    #[test]
    fn a_rootfs_link_to_a_host_file_stays_inside_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let host = dir.path().join("host-file");
        std::fs::write(&host, "host\n").unwrap();
        // An image whose resolv.conf points at a host path.
        std::os::unix::fs::symlink(&host, root.join("etc/resolv.conf")).unwrap();
        let place = Place::Rootfs { root: root.clone() };
        // The link resolves inside the rootfs, where that path does not
        // exist: an error, and the host's file untouched.
        assert!(write(&place, &lease()).is_err());
        assert_eq!(std::fs::read_to_string(&host).unwrap(), "host\n");
        // Where the image has that path, its own file is written.
        let inside = root.join(host.strip_prefix("/").unwrap());
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        let written = write(&place, &lease()).unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(&host).unwrap(), "host\n");
        let text = std::fs::read_to_string(&inside).unwrap();
        assert!(
            text.contains("nameserver 192.0.2.53\nsearch lab.example\n"),
            "{text}"
        );
        restore(&written).unwrap();
        assert_eq!(std::fs::read_to_string(&inside).unwrap(), "");
    }

    #[test]
    fn a_bind_source_of_the_host_is_refused_and_others_restored() {
        let place = Place::Bind {
            source: "/etc/resolv.conf".into(),
        };
        let error = write(&place, &lease()).unwrap_err();
        assert!(
            format!("{error:#}").contains("is a file of the host"),
            "{error:#}"
        );
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("resolv.conf");
        std::fs::write(&source, "nameserver 198.51.100.1\n").unwrap();
        let place = Place::Bind {
            source: source.clone(),
        };
        let written = write(&place, &lease()).unwrap().unwrap();
        assert!(std::fs::read_to_string(&source)
            .unwrap()
            .contains("nameserver 192.0.2.53"));
        restore(&written).unwrap();
        assert_eq!(
            std::fs::read_to_string(&source).unwrap(),
            "nameserver 198.51.100.1\n"
        );
    }

    #[test]
    fn a_hostile_domain_is_left_out() {
        let mut lease = lease();
        lease.domain = Some("x\nnameserver 203.0.113.66".into());
        assert!(!contents(&lease).contains("203.0.113.66"));
    }
}
