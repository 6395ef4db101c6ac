//! The `macvlan-runc` runtime wrapper with real runc on the lab.

mod common;

use common::{as_strs, flat_env, text, Lab, GATEWAY};
use serde_json::json;

#[test]
fn create_through_the_wrapper_adds_the_hooks_once() {
    let lab = Lab::new(&["hA"]);
    let id = lab.id("wrapped");
    let bundle = lab.bundle_without_hooks("hA", &id, &as_strs(&flat_env("192.0.2.10/24")), &[]);
    let mut config = lab.read_config(&bundle);
    config["x-engine-private"] = json!({"kept": [1, {"a": null}]});
    lab.write_config(&bundle, &config);

    lab.start_wrapped("hA", &id, &bundle)
        .expect("starts through the wrapper");
    assert_eq!(lab.container_interfaces("hA", &id)[0].2, ["192.0.2.10/24"]);
    assert!(lab.ping("hA", &id, GATEWAY));

    let config = lab.read_config(&bundle);
    assert_eq!(
        config["x-engine-private"],
        json!({"kept": [1, {"a": null}]})
    );
    assert_eq!(
        config["hooks"]["createRuntime"].as_array().unwrap().len(),
        1
    );
    assert_eq!(config["hooks"]["poststop"].as_array().unwrap().len(), 1);
    let args = &config["hooks"]["createRuntime"][0]["args"];
    assert_eq!(args[2], lab.config_path("hA").to_str().unwrap(), "{args}");

    // A restart is a new `create`: same address, and no second pair of hooks.
    lab.stop("hA", &id);
    lab.start_wrapped("hA", &id, &bundle).unwrap();
    assert_eq!(lab.container_interfaces("hA", &id)[0].2, ["192.0.2.10/24"]);
    let config = lab.read_config(&bundle);
    assert_eq!(
        config["hooks"]["createRuntime"].as_array().unwrap().len(),
        1
    );
    assert_eq!(config["hooks"]["poststop"].as_array().unwrap().len(), 1);
}

#[test]
fn containers_that_ask_for_nothing_get_no_hook() {
    let lab = Lab::new(&["hA"]);
    let id = lab.id("plain");
    let bundle = lab.bundle_without_hooks("hA", &id, &[], &[]);
    let before = std::fs::read(bundle.join("config.json")).unwrap();
    lab.start_wrapped("hA", &id, &bundle).unwrap();
    assert_eq!(std::fs::read(bundle.join("config.json")).unwrap(), before);
    assert!(lab.container_interfaces("hA", &id).is_empty());
}

#[test]
fn other_subcommands_pass_straight_through() {
    let lab = Lab::new(&["hA"]);
    let id = lab.id("through");
    let bundle = lab.bundle_without_hooks("hA", &id, &[], &[]);
    lab.start_wrapped("hA", &id, &bundle).unwrap();
    let root = lab.runc_root();
    let root = root.to_str().unwrap();

    let ours = lab.wrapper("hA", &["--root", root, "state", &id]);
    let theirs = lab.runc("hA", &["state", &id]);
    assert!(ours.status.success());
    assert_eq!(ours.stdout, theirs.stdout);

    // Exit codes and stderr of a failing command are runc's.
    let ours = lab.wrapper("hA", &["--root", root, "kill", "no-such-container", "KILL"]);
    let theirs = lab.runc("hA", &["kill", "no-such-container", "KILL"]);
    assert_eq!(ours.status.code(), theirs.status.code());
    assert!(!ours.status.success());
    assert_eq!(ours.stderr, theirs.stderr);

    let features = lab.wrapper("hA", &["features"]);
    assert!(features.status.success(), "{}", text(&features));
    assert!(String::from_utf8_lossy(&features.stdout).contains("ociVersionMin"));
}

#[test]
fn wrapper_errors_reach_the_runtime_log_as_json() {
    let lab = Lab::new(&["hA"]);
    // A config whose runtime is the wrapper itself must not loop.
    let cfg = lab.dir.path().join("self.toml");
    std::fs::write(&cfg, format!("runtime = \"{}\"\n", common::MACVLAN_RUNC)).unwrap();
    let log = lab.dir.path().join("runc-log.json");
    let out = common::run(
        common::MACVLAN_RUNC,
        &[
            "--macvlan-config",
            cfg.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "state",
            "x",
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("macvlan-runc itself"), "{}", text(&out));
    let line = std::fs::read_to_string(&log).unwrap();
    let entry: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(entry["level"], "error");
    assert!(
        entry["msg"]
            .as_str()
            .unwrap()
            .contains("macvlan-runc itself"),
        "{line}"
    );
}

/// Runs the wrapper with `config` and a runtime that writes what it was
/// given: its arguments, MACVLAN_RUNC_WRAPPED, and its blocked and ignored
/// signals (the wrapper runs with SIGPIPE ignored and SIGUSR1 blocked).
fn recorded_call(lab: &Lab, config: &std::path::Path, args: &[&str]) -> String {
    use std::os::unix::process::CommandExt;
    let out = unsafe {
        std::process::Command::new(common::MACVLAN_RUNC)
            .arg("--macvlan-config")
            .arg(config)
            .args(args)
            .env("PATH", lab.dir.path())
            .pre_exec(|| {
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGUSR1);
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                Ok(())
            })
            .output()
            .unwrap()
    };
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn pass_through_calls_reach_runc_as_the_full_wrapper_passes_them() {
    // Runtime calls other than create/run are passed on from the wrapper's
    // entry point, before the C library starts, when the config file is
    // plain (src/oci/passthrough.rs); a config it does not follow goes the
    // full way. Both must give runc the same.
    let lab = Lab::new(&["hA"]);
    let recorder = lab.dir.path().join("recorder");
    std::fs::write(
        &recorder,
        "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" \"wrapped=$MACVLAN_RUNC_WRAPPED\"\n\
         while read -r k v; do case $k in SigBlk:|SigIgn:) echo \"$k $v\";; esac; done \
         < /proc/$$/status\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &recorder,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let plain = lab.dir.path().join("plain.toml");
    std::fs::write(&plain, "# found on PATH\nruntime = \"recorder\"\n").unwrap();
    // The same runtime, spelled with an escape the fast reader leaves alone.
    let escaped = lab.dir.path().join("escaped.toml");
    std::fs::write(&escaped, "runtime = \"rec\\u006Frder\"\n").unwrap();

    let args = [
        "--root",
        "/r",
        "--log-format=json",
        "delete",
        "--force",
        "id 1",
    ];
    let fast = recorded_call(&lab, &plain, &args);
    let full = recorded_call(&lab, &escaped, &args);
    assert_eq!(fast, full);
    let lines: Vec<&str> = fast.lines().collect();
    assert_eq!(lines[0], recorder.to_str().unwrap());
    assert_eq!(lines[1..7], args);
    assert_eq!(lines[7], "wrapped=1");
    // SIGUSR1 still blocked (bit 10), SIGPIPE no longer ignored (bit 13),
    // read by the shell itself (it blocks signals around what it forks).
    assert!(fast.contains("SigBlk: 0000000000000200"), "{fast}");
    let ignored = lines
        .iter()
        .find_map(|l| l.strip_prefix("SigIgn: "))
        .unwrap();
    assert_eq!(
        u64::from_str_radix(ignored, 16).unwrap() & (1 << 12),
        0,
        "{fast}"
    );

    // A runtime that is not there: the full wrapper's error, from both.
    std::fs::write(&plain, "runtime = \"/nonexistent/runc\"\n").unwrap();
    let out = common::run(
        common::MACVLAN_RUNC,
        &["--macvlan-config", plain.to_str().unwrap(), "start", "x"],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("/nonexistent/runc"), "{}", text(&out));
}
