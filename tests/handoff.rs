//! Hooks handed to the running daemon (issue 17): the daemon does their
//! work and says so (`by=daemon`), refuses what a hook refuses with the
//! same message, and a hook whose daemon is gone, or declines, works alone.

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
    // The hooks' own lines say who did the work.
    let config = lab.config_path("hA");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("debug = true\n{text}")).unwrap();
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
        assert!(events(&lab, "hook", id)[0].contains(" by=daemon "));
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

    // Their poststops are the daemon's too.
    for id in &ids {
        lab.stop("hA", id);
        assert!(by_daemon(&lab, "detach", id), "{}", lab.log("hA"));
    }
    let records = lab.records("hA");
    assert_eq!(records.len(), 8, "{records:?}");
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
    assert!(events(&lab, "hook", &alone)[0].contains(" by=hook "));
    lab.stop("hA", &alone);
    assert!(!by_daemon(&lab, "detach", &alone));

    // A daemon read from another config file declines: the hook works alone.
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
    let log = lab.log("hA");
    assert!(
        log.lines()
            .any(|l| l.contains("event=hook-handoff")
                && l.contains("declined=\"the hook's config file")),
        "{log}"
    );
    lab.stop("hA", &declined);
}
