//! Hooks handed to the running daemon (issue 17): the daemon does their
//! work and says so (`by=daemon`), refuses what a hook refuses with the
//! same message, and a hook whose daemon is gone, or declines, works alone.
//! Without `debug`, `macvlan hook` offers itself from its entry point,
//! before the C library (src/bin/macvlan.rs); with it, from `main`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Lab, MACVLAN};

/// The host's log lines with `event=NAME` about container `id`.
fn events(lab: &Lab, name: &str, id: &str) -> Vec<String> {
    let event = format!("event={name} ");
    let container = format!("container={id} ");
    lab.log("hA")
        .lines()
        .filter(|l| l.contains(&event) && l.contains(&container))
        .map(str::to_string)
        .collect()
}

/// The one `event=NAME` line about `id`, and whether the daemon wrote it.
fn by_daemon(lab: &Lab, name: &str, id: &str) -> bool {
    let lines = events(lab, name, id);
    assert_eq!(lines.len(), 1, "{name} of {id}: {}", lab.log("hA"));
    lines[0].contains(" by=daemon")
}

#[test]
fn hooks_go_to_the_running_daemon_and_work_alone_without_it() {
    let lab = Lab::new(&["hA"]);
    lab.create_lan("hA", &[]);
    let config = lab.config_path("hA");
    let text = std::fs::read_to_string(&config).unwrap();
    let socket = lab.daemon_dir("hA").join("hooks.sock");
    let daemon = lab.spawn_macvlan("hA", "hA", &["daemon"]);
    common::wait_for(Duration::from_secs(5), "the daemon's socket", || {
        socket.exists()
    });
    let mode = std::os::unix::fs::PermissionsExt::mode(&socket.metadata().unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // Eight at once: a thread of the daemon each, an address each.
    let ids: Vec<String> = (0..8).map(|n| lab.id(&format!("d{n}"))).collect();
    lab.start_at_once("hA", &ids, &["NETWORK=lan"]);
    let mut addresses = BTreeSet::new();
    for id in &ids {
        let interfaces = lab.container_interfaces("hA", id);
        let eth0 = interfaces.iter().find(|i| i.0 == "eth0").expect("eth0");
        assert_eq!(eth0.2.len(), 1, "{interfaces:?}");
        addresses.insert(eth0.2[0].clone());
        assert!(by_daemon(&lab, "attach", id), "{}", lab.log("hA"));
    }
    assert_eq!(addresses.len(), 8, "{addresses:?}");
    assert!(lab.ping("hA", &ids[0], common::GATEWAY));

    // Refused by the daemon as a hook refuses it, and nothing is left.
    let outside = lab.id("outside");
    let bundle = lab.bundle("hA", &outside, &["NETWORK=lan", "IP=198.51.100.9"], &[]);
    let error = lab.start("hA", &outside, &bundle).unwrap_err();
    assert!(
        error.contains(&format!("container {outside}: createRuntime"))
            && error.contains("invalid IP/macvlan.ip \\\"198.51.100.9\\\"")
            && error.contains("outside its subnet 192.0.2.0/24"),
        "{error}"
    );
    assert!(events(&lab, "hook", &outside)[0].contains(" by=daemon "));
    assert!(events(&lab, "attach", &outside).is_empty());
    assert!(!lab.store_keys("hA").iter().any(|k| k.contains(&outside)));

    // The early path sends the state alone: the daemon reads config.json.
    // A config file broken since the daemon read it stops the full hook
    // (it reads the file) but not the early path, which reads only
    // `debug` and `runtime_dir` and leaves the rest to the daemon.
    std::fs::write(&config, format!("{text}[nosuchtable]\nx = 1\n")).unwrap();
    let early = lab.id("early");
    let bundle = lab.bundle("hA", &early, &["NETWORK=lan"], &[]);
    lab.start("hA", &early, &bundle).unwrap();
    assert!(by_daemon(&lab, "attach", &early), "{}", lab.log("hA"));
    lab.stop("hA", &early);
    assert!(by_daemon(&lab, "detach", &early), "{}", lab.log("hA"));

    // A state above what the early path holds (64 KiB) goes back on stdin,
    // read and unread parts, and the full hook hands it over.
    std::fs::write(&config, &text).unwrap();
    let big = lab.id("big");
    let filler = "x".repeat(80 * 1024);
    let bundle = lab.bundle(
        "hA",
        &big,
        &["NETWORK=lan"],
        &[("org.example.filler", &filler)],
    );
    lab.start("hA", &big, &bundle).unwrap();
    assert!(by_daemon(&lab, "attach", &big), "{}", lab.log("hA"));
    lab.stop("hA", &big);

    // With `debug`, the full hook offers itself and logs its timing line.
    let debug = format!("debug = true\n{text}");
    std::fs::write(&config, &debug).unwrap();
    let logged = lab.id("logged");
    let bundle = lab.bundle("hA", &logged, &["NETWORK=lan"], &[]);
    lab.start("hA", &logged, &bundle).unwrap();
    assert!(by_daemon(&lab, "attach", &logged));
    assert!(events(&lab, "hook", &logged)[0].contains(" by=daemon "));
    lab.stop("hA", &logged);
    std::fs::write(&config, &text).unwrap();

    // Their poststops are the daemon's too.
    for id in &ids {
        lab.stop("hA", id);
        assert!(by_daemon(&lab, "detach", id), "{}", lab.log("hA"));
    }
    let records = lab.records("hA");
    // The eight, and early, big and logged.
    assert_eq!(records.len(), 11, "{records:?}");
    assert!(
        records.iter().all(|r| r["state"] == "stopped"),
        "{records:?}"
    );

    // Killed outright: its socket stays with nobody behind it, and the
    // hooks work alone.
    let mut daemon = daemon;
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    assert!(socket.exists());
    let alone = lab.id("alone");
    let bundle = lab.bundle("hA", &alone, &["NETWORK=lan"], &[]);
    lab.start("hA", &alone, &bundle).unwrap();
    assert!(!by_daemon(&lab, "attach", &alone));
    lab.stop("hA", &alone);
    assert!(!by_daemon(&lab, "detach", &alone));

    // A daemon read from another config file declines: the hook works
    // alone, its state put back on stdin by the early path.
    let other = lab.dir.path().join("other.toml");
    std::fs::copy(&config, &other).unwrap();
    let _other = lab.spawn(
        "hA",
        MACVLAN,
        &["--config", other.to_str().unwrap(), "daemon"],
    );
    common::wait_for(Duration::from_secs(5), "the other daemon", || {
        lab.daemon_pid("hA").is_some()
    });
    let declined = lab.id("declined");
    let bundle = lab.bundle("hA", &declined, &["NETWORK=lan"], &[]);
    lab.start("hA", &declined, &bundle).unwrap();
    assert!(!by_daemon(&lab, "attach", &declined));
    lab.stop("hA", &declined);
    assert!(!by_daemon(&lab, "detach", &declined));
    // With `debug`, the full hook logs why.
    std::fs::write(&config, &debug).unwrap();
    let declined = lab.id("declined-debug");
    let bundle = lab.bundle("hA", &declined, &["NETWORK=lan"], &[]);
    lab.start("hA", &declined, &bundle).unwrap();
    assert!(!by_daemon(&lab, "attach", &declined));
    let log = lab.log("hA");
    assert!(
        log.lines()
            .any(|l| l.contains("event=hook-handoff")
                && l.contains("declined=\"the hook's config file")),
        "{log}"
    );
    lab.stop("hA", &declined);
}
