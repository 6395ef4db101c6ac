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
        assert!(
            contents.lines().any(|l| l.ends_with(path)),
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
