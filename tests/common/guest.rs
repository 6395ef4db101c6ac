//! A QEMU guest running Debian's kernel (which has 802.1Q and ipvlan, unlike
//! this machine's): an initramfs with busybox-static, iproute2's `ip`,
//! dnsmasq, the project's `macvlan` binary (stripped, with its libraries), the kernel
//! modules the lab needs and a test script as /init; the script's output is
//! read from the serial console. Recipe: DESIGN.md §4 (TCG: KVM aborts here).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{must, MACVLAN};

/// Modules loaded by the guest scripts, in dependency order.
pub const MODULES: [&str; 11] = [
    "llc", "stp", "garp", "mrp", "8021q", "macvlan", "veth", "bridge", "sch_tbf", "vrf", "ipvlan",
];

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-assets")
}

/// Debian's kernel package, fetched by scripts/setup.sh.
fn kernel_deb() -> PathBuf {
    std::fs::read_dir(assets())
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().contains("linux-image-"))
        })
        .expect("a linux-image .deb in target/test-assets (scripts/setup.sh fetches it)")
}

/// Copies `binary` to `root` at the same path, with every library `ldd`
/// names, so that it runs inside the guest.
fn install_with_libraries(root: &Path, binary: &Path, at: &str) {
    let target = root.join(at.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    must(
        "strip",
        &["-o", target.to_str().unwrap(), binary.to_str().unwrap()],
    );
    let ldd = super::run("ldd", &[binary.to_str().unwrap()]);
    for library in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let copy = root.join(library.trim_start_matches('/'));
        if !copy.exists() {
            std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
            std::fs::copy(library, &copy).unwrap();
        }
    }
}

pub struct Guest {
    dir: tempfile::TempDir,
}

impl Guest {
    /// Builds the kernel and an initramfs whose /init is `script`.
    pub fn build(script: &str) -> Guest {
        let dir = tempfile::Builder::new()
            .prefix("mvguest-")
            .tempdir()
            .unwrap();
        let unpacked = dir.path().join("kernel");
        must(
            "dpkg-deb",
            &[
                "-x",
                kernel_deb().to_str().unwrap(),
                unpacked.to_str().unwrap(),
            ],
        );
        let boot = unpacked.join("boot");
        let vmlinuz = std::fs::read_dir(&boot)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("vmlinuz-")
            })
            .expect("vmlinuz in the kernel package");
        std::fs::rename(&vmlinuz, dir.path().join("vmlinuz")).unwrap();

        let root = dir.path().join("root");
        for sub in [
            "bin", "sbin", "proc", "sys", "run", "tmp", "etc", "modules", "dev",
        ] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
        install_with_libraries(&root, Path::new("/usr/sbin/ip"), "/sbin/ip");
        install_with_libraries(&root, Path::new(MACVLAN), "/bin/macvlan");
        // The DHCP server of the guest's LAN (Debian's dnsmasq-base).
        install_with_libraries(&root, Path::new("/usr/sbin/dnsmasq"), "/sbin/dnsmasq");
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
        for module in MODULES {
            let found = must(
                "find",
                &[
                    unpacked.join("lib/modules").to_str().unwrap(),
                    "-name",
                    &format!("{module}.ko"),
                ],
            );
            let path = found
                .lines()
                .next()
                .unwrap_or_else(|| panic!("{module}.ko"));
            std::fs::copy(path, root.join("modules").join(format!("{module}.ko"))).unwrap();
        }
        let init = root.join("init");
        std::fs::write(&init, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
        // busybox cpio writes the newc format the kernel unpacks.
        let initrd = dir.path().join("initrd.gz");
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd {} && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > {}",
                root.display(),
                initrd.display()
            ))
            .status()
            .unwrap();
        assert!(status.success(), "building the initramfs");
        std::fs::remove_dir_all(&unpacked).unwrap();
        Guest { dir }
    }

    /// Boots the guest and returns what it printed on its console, once it
    /// powered off (or after `limit`).
    pub fn run(&self, limit: Duration) -> String {
        let console = self.dir.path().join("console.log");
        let out = std::fs::File::create(&console).unwrap();
        let status = Command::new("timeout")
            .arg("--kill-after=5")
            .arg(limit.as_secs().to_string())
            .args([
                "qemu-system-x86_64",
                "-accel",
                "tcg",
                "-m",
                "768",
                "-nographic",
                "-no-reboot",
                "-kernel",
            ])
            .arg(self.dir.path().join("vmlinuz"))
            .arg("-initrd")
            .arg(self.dir.path().join("initrd.gz"))
            .args(["-append", "console=ttyS0 panic=-1 ipv6.disable=1 quiet"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .status()
            .expect("qemu-system-x86_64 (Debian qemu-system-x86)");
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        assert!(
            status.success() || text.contains("GUEST-DONE"),
            "qemu exited with {status}:\n{text}"
        );
        text
    }
}

/// The `RESULT <check> PASS|FAIL …` lines of a guest run.
pub fn results(console: &str) -> Vec<(String, bool, String)> {
    console
        .lines()
        .filter_map(|line| {
            // The console may put terminal escapes before the first line.
            let rest = &line[line.find("RESULT ")? + "RESULT ".len()..];
            let mut parts = rest.splitn(3, ' ');
            let name = parts.next()?.to_string();
            let pass = parts.next()? == "PASS";
            Some((name, pass, parts.next().unwrap_or("").to_string()))
        })
        .collect()
}

/// Boots a guest whose /init is tests/guest/lib.sh followed by `script`
/// and asserts that every check in `checks` (and nothing else) passed.
pub fn run_checks(script: &str, checks: &[&str]) {
    let started = std::time::Instant::now();
    let guest = Guest::build(&[include_str!("../guest/lib.sh"), script].concat());
    let built = started.elapsed();
    // TCG is slow: a run takes from 20 s to a minute and a half here.
    let limit = std::env::var("MACVLAN_GUEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let console = guest.run(Duration::from_secs(limit));
    eprintln!(
        "guest: initramfs built in {built:?}, ran in {:?}",
        started.elapsed() - built
    );
    let results = results(&console);
    let failed: Vec<String> = results
        .iter()
        .filter(|(_, pass, _)| !pass)
        .map(|(name, _, detail)| format!("{name}: {detail}"))
        .collect();
    assert!(
        failed.is_empty(),
        "failed in the guest:\n{}\n\nconsole:\n{console}",
        failed.join("\n")
    );
    for check in checks {
        assert!(
            results.iter().any(|(name, pass, _)| name == check && *pass),
            "{check} did not report PASS:\n{console}"
        );
    }
    assert!(console.contains("GUEST-DONE"), "{console}");
}
