//! The .deb: built by packaging/build-deb.sh from the release binaries
//! (scripts/setup.sh builds them), checked by what dpkg-deb reads back.

mod common;

use common::{must, run, text};

#[test]
fn debian_package_has_binaries_config_hooks_units_and_docs() {
    let out_dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/build-deb.sh");
    let built = run("bash", &[script, out_dir.path().to_str().unwrap()]);
    assert!(built.status.success(), "build-deb: {}", text(&built));
    let package = String::from_utf8_lossy(&built.stdout).trim().to_string();
    assert!(package.ends_with(".deb"), "{package}");

    let contents = must("dpkg-deb", &["-c", &package]);
    for path in [
        "./usr/bin/macvlan",
        "./usr/bin/macvlan-runc",
        "./usr/lib/cni/macvlan-runc",
        "./usr/share/doc/macvlan-runc/examples/cni-lan.conflist",
        "./usr/share/doc/macvlan-runc/examples/multus-network-attachment.yaml",
        "./etc/macvlan-runc/config.toml",
        "./usr/share/containers/oci/hooks.d/macvlan.json",
        "./lib/systemd/system/macvlan-gc.service",
        "./lib/systemd/system/macvlan-gc.timer",
        "./lib/systemd/system/macvlan-daemon.service",
        "./lib/systemd/system/macvlan-dns.service",
        "./usr/share/doc/macvlan-runc/README.md",
        "./usr/share/doc/macvlan-runc/examples/docker-daemon.json",
        "./usr/share/doc/macvlan-runc/examples/containerd-config.toml",
        "./usr/share/doc/macvlan-runc/examples/kubernetes-runtimeclass.yaml",
        "./usr/share/doc/macvlan-runc/examples/crio-macvlan.conf",
        "./usr/share/man/man1/macvlan.1.gz",
        "./usr/share/man/man1/macvlan-network-create.1.gz",
        "./usr/share/bash-completion/completions/macvlan",
        "./usr/share/zsh/vendor-completions/_macvlan",
        "./usr/share/fish/vendor_completions.d/macvlan.fish",
    ] {
        // (a symlink's line goes on: `path -> target`)
        assert!(
            contents
                .lines()
                .any(|l| l.ends_with(path) || l.contains(&format!("{path} -> "))),
            "{path} missing:\n{contents}"
        );
    }
    let control = must("dpkg-deb", &["-f", &package, "Package", "Depends"]);
    assert!(
        control.contains("Package: macvlan-runc") && control.contains("Depends: runc"),
        "{control}"
    );
    let conffiles = must(
        "sh",
        &[
            "-c",
            &format!("dpkg-deb --ctrl-tarfile {package} | tar -xO ./conffiles"),
        ],
    );
    assert!(
        conffiles.contains("/etc/macvlan-runc/config.toml"),
        "{conffiles}"
    );

    // Unpacked, the pieces work together.
    let root = tempfile::tempdir().unwrap();
    must("dpkg-deb", &["-x", &package, root.path().to_str().unwrap()]);
    let at = |p: &str| root.path().join(p.trim_start_matches('/'));
    let version = must(at("/usr/bin/macvlan").to_str().unwrap(), &["--version"]);
    assert!(version.starts_with("macvlan "), "{version}");
    // The CNI plugin answers VERSION as a runtime asks it.
    let mut plugin = std::process::Command::new(at("/usr/lib/cni/macvlan-runc"))
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut plugin.stdin.take().unwrap(),
        br#"{"cniVersion":"1.0.0"}"#,
    )
    .unwrap();
    let answer = plugin.wait_with_output().unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&answer.stdout).unwrap();
    assert_eq!(answer["supportedVersions"][2], "1.1.0", "{answer}");
    let config = std::fs::read_to_string(at("/etc/macvlan-runc/config.toml")).unwrap();
    macvlan_runc::config::Config::parse(&config).expect("packaged config parses");
    let hook: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(at("/usr/share/containers/oci/hooks.d/macvlan.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(hook["version"], "1.0.0");
    assert_eq!(hook["hook"]["path"], "/usr/bin/macvlan");
    assert_eq!(
        hook["stages"],
        serde_json::json!(["createRuntime", "poststop"])
    );
    let daemon: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(at(
            "/usr/share/doc/macvlan-runc/examples/docker-daemon.json",
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        daemon["runtimes"]["macvlan-runc"]["path"],
        "/usr/bin/macvlan-runc"
    );
    let timer = std::fs::read_to_string(at("/lib/systemd/system/macvlan-gc.timer")).unwrap();
    assert!(timer.contains("OnUnitActiveSec="), "{timer}");
    let service = std::fs::read_to_string(at("/lib/systemd/system/macvlan-gc.service")).unwrap();
    assert!(
        service.contains("ExecStart=/usr/bin/macvlan --config /etc/macvlan-runc/config.toml gc"),
        "{service}"
    );
}

/// The RPM (Fedora and RHEL are podman's home): built by
/// packaging/build-rpm.sh with rpmbuild from the same staged files, checked
/// with rpm's queries — file list, config files kept on upgrade, scriptlets.
#[test]
fn rpm_package_has_the_same_files_config_noreplace_and_scripts() {
    let out_dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/build-rpm.sh");
    let built = run("bash", &[script, out_dir.path().to_str().unwrap()]);
    assert!(built.status.success(), "build-rpm: {}", text(&built));
    let package = String::from_utf8_lossy(&built.stdout).trim().to_string();
    assert!(package.ends_with(".rpm"), "{package}");
    let files = must("rpm", &["-qlp", &package]);
    for path in [
        "/usr/bin/macvlan",
        "/usr/bin/macvlan-runc",
        "/usr/lib/cni/macvlan-runc",
        "/etc/macvlan-runc/config.toml",
        "/usr/share/containers/oci/hooks.d/macvlan.json",
        "/usr/lib/systemd/system/macvlan-gc.timer",
        "/usr/lib/systemd/system/macvlan-daemon.service",
        "/usr/share/man/man1/macvlan.1.gz",
        "/usr/share/bash-completion/completions/macvlan",
        "/var/lib/macvlan-runc",
    ] {
        assert!(files.lines().any(|l| l == path), "{path} missing:\n{files}");
    }
    let flags = must(
        "rpm",
        &[
            "-qp",
            "--qf",
            "[%{FILENAMES} %{FILEFLAGS:fflags}\n]",
            &package,
        ],
    );
    for config in [
        "/etc/macvlan-runc/config.toml",
        "/etc/logrotate.d/macvlan-runc",
    ] {
        assert!(
            flags.lines().any(|l| l == format!("{config} cn")),
            "{config} is not %config(noreplace):\n{flags}"
        );
    }
    let scripts = must("rpm", &["-qp", "--scripts", &package]);
    assert!(
        scripts.contains("systemctl enable --now macvlan-gc.timer")
            && scripts.contains("systemctl disable --now macvlan-gc.timer"),
        "{scripts}"
    );
    let requires = must("rpm", &["-qp", "--requires", &package]);
    assert!(requires.lines().any(|l| l.trim() == "runc"), "{requires}");
}
