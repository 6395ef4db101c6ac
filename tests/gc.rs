//! `macvlan gc`: removal discovered from the engines' state (runc here).

mod common;

use common::{as_strs, flat_env, text, Lab};

fn gc(lab: &Lab, args: &[&str]) -> String {
    let mut all = vec!["gc"];
    all.extend_from_slice(args);
    let out = lab.macvlan("hA", &all);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn gc_releases_removed_containers_and_keeps_existing_ones() {
    let lab = Lab::new(&["hA"]);
    let running = lab.id("running");
    let removed = lab.id("removed");
    let stopped = lab.id("stopped");
    for (id, ip) in [
        (&running, "192.0.2.10/24"),
        (&removed, "192.0.2.11/24"),
        (&stopped, "192.0.2.12/24"),
    ] {
        let bundle = lab.bundle("hA", id, &as_strs(&flat_env(ip)), &[]);
        lab.start("hA", id, &bundle).unwrap();
    }
    // Removed: runc delete runs poststop and drops runc's state.
    lab.stop("hA", &removed);
    // Stopped but still there: its process is dead, runc still knows it,
    // and poststop has marked the record stopped.
    let out = lab.runc("hA", &["kill", &stopped, "KILL"]);
    assert!(out.status.success(), "{}", text(&out));
    let state = format!(r#"{{"id":"{stopped}","status":"stopped"}}"#);
    let out = common::run(
        "sh",
        &[
            "-c",
            &format!(
                "echo '{state}' | {} --config {} hook poststop",
                common::MACVLAN,
                lab.config_path("hA").display()
            ),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    let before = lab.store_keys("hA");
    let dry = gc(&lab, &["--dry-run"]);
    assert!(
        dry.contains(&format!("would release {removed} 192.0.2.11/24")),
        "{dry}"
    );
    assert_eq!(dry.lines().count(), 1, "{dry}");
    assert_eq!(lab.store_keys("hA"), before, "a dry run changes nothing");

    let done = gc(&lab, &[]);
    assert!(
        done.contains(&format!(
            "released {removed} 192.0.2.11/24 (container no longer exists)"
        )),
        "{done}"
    );
    let keys = lab.store_keys("hA");
    assert!(
        !keys
            .iter()
            .any(|k| k.contains(&removed) || k.ends_with("/192.0.2.11")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.ends_with("/192.0.2.12")),
        "the stopped container keeps its address: {keys:?}"
    );
    assert!(lab
        .log("hA")
        .lines()
        .any(|l| l.contains("event=gc") && l.contains(&removed)));

    // The released address is free for another container; the stopped
    // container's is not.
    let next = lab.id("next");
    let bundle = lab.bundle("hA", &next, &as_strs(&flat_env("192.0.2.11/24")), &[]);
    lab.start("hA", &next, &bundle).unwrap();
    let thief = lab.id("thief");
    let bundle = lab.bundle("hA", &thief, &as_strs(&flat_env("192.0.2.12/24")), &[]);
    assert!(lab
        .start("hA", &thief, &bundle)
        .unwrap_err()
        .contains(&format!("held by container {stopped}")));
    assert_eq!(gc(&lab, &[]).trim(), "nothing to release");

    // With a retention, a container stopped longer than that loses its
    // address even though it still exists; running ones are untouched.
    let config = std::fs::read_to_string(lab.config_path("hA")).unwrap();
    std::fs::write(
        lab.config_path("hA"),
        config.replace("[gc]\n", "[gc]\nstopped_retention = \"1s\"\n"),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let done = gc(&lab, &[]);
    assert!(
        done.contains(&format!("released {stopped} 192.0.2.12/24 (stopped for")),
        "{done}"
    );
    assert_eq!(done.lines().count(), 1, "{done}");
    let ids: Vec<String> = lab
        .records("hA")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&running) && ids.contains(&next), "{ids:?}");
}
