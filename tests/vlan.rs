//! VLAN networks on this machine, whose kernel has no 802.1Q: the admin
//! verbs, `macvlan doctor`, and a VLAN request that fails with an error
//! saying why and leaves nothing behind. The data path is tested in a guest
//! with 802.1Q (tests/vlan_guest.rs).

mod common;

use common::{as_strs, text, Lab, UPLINK};

#[test]
fn vlan_verbs_create_list_inspect_and_delete() {
    let lab = Lab::new(&["hA"]);
    let ok = |args: &[&str]| {
        let out = lab.macvlan("hA", args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let created = ok(&[
        "vlan",
        "create",
        "--name",
        "test1",
        "--subnet",
        "198.18.1.0/24",
        "--host-interface",
        UPLINK,
        "--id",
        "101",
    ]);
    assert_eq!(
        created.trim(),
        "vlan test1: id 101 subnet 198.18.1.0/24 gateway 198.18.1.1 on lan0"
    );
    // The original's spelling, a random ID and a chosen gateway.
    let created = ok(&[
        "create-vlan",
        "--name",
        "test2",
        "--subnet",
        "198.18.2.0/24",
        "--host-interface",
        UPLINK,
        "--gateway",
        "198.18.2.254",
    ]);
    assert!(created.contains("gateway 198.18.2.254"), "{created}");
    let list = ok(&["vlan", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("test1") && l.contains("198.18.1.0/24") && l.ends_with("253")),
        "{list}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&["vlan", "inspect", "test2"])).unwrap();
    let id = inspect["id"].as_u64().unwrap();
    assert!((1..=4094).contains(&id) && id != 101, "{inspect}");
    assert_eq!(inspect["sub_interface"], format!("lan0.{id}"));
    assert_eq!(inspect["free"], 253);

    let refused: [(&[&str], &str); 6] = [
        (
            &[
                "vlan",
                "create",
                "--name",
                "x",
                "--subnet",
                "198.18.1.128/25",
                "--host-interface",
                UPLINK,
            ],
            "overlaps network \"test1\" (198.18.1.0/24)",
        ),
        (
            &[
                "vlan",
                "create",
                "--name",
                "x",
                "--subnet",
                "198.18.3.0/24",
                "--host-interface",
                UPLINK,
                "--id",
                "101",
            ],
            "VLAN ID 101 is used by network \"test1\"",
        ),
        (
            &[
                "vlan",
                "create",
                "--name",
                "x",
                "--subnet",
                "198.18.3.0/24",
                "--host-interface",
                UPLINK,
                "--id",
                "4095",
            ],
            "invalid --id \"4095\": expected 1-4094",
        ),
        (
            &[
                "vlan",
                "create",
                "--name",
                "x",
                "--subnet",
                "198.18.3.0/24",
                "--host-interface",
                UPLINK,
                "--id",
                "0",
            ],
            "invalid --id \"0\"",
        ),
        (
            &[
                "vlan",
                "create",
                "--name",
                "test1",
                "--subnet",
                "198.18.3.0/24",
                "--host-interface",
                UPLINK,
            ],
            "a network \"test1\" exists already",
        ),
        (
            &["vlan", "inspect", "nope"],
            "no network \"nope\"; known: test1, test2",
        ),
    ];
    for (args, expected) in refused {
        let out = lab.macvlan("hA", args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(text(&out).contains(expected), "{args:?}: {}", text(&out));
    }
    ok(&["vlan", "delete", "test2"]);
    assert!(!ok(&["vlan", "list"]).contains("test2"));
    assert!(!lab
        .store_keys("hA")
        .contains(&format!("/macvlan/vlan-id/{id}")));
}

#[test]
fn without_8021q_a_vlan_request_fails_saying_so_and_leaves_nothing() {
    let lab = Lab::new(&["hA"]);
    let out = lab.macvlan(
        "hA",
        &[
            "vlan",
            "create",
            "--name",
            "test1",
            "--subnet",
            "198.18.1.0/24",
            "--host-interface",
            UPLINK,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let keys_before = lab.store_keys("hA");

    let id = lab.id("v1");
    let bundle = lab.bundle("hA", &id, &["TYPE=vlan", "VLAN=test1"], &[]);
    let error = lab.start("hA", &id, &bundle).unwrap_err();
    assert!(
        error.contains(&id) && error.contains("no 802.1Q VLAN support"),
        "{error}"
    );
    let _ = lab.runc("hA", &["delete", "--force", &id]);
    assert_eq!(lab.links("hA"), ["lo", UPLINK]);
    assert_eq!(lab.store_keys("hA"), keys_before);

    // An unknown VLAN is refused before anything is touched, naming the known ones.
    let id = lab.id("v2");
    let bundle = lab.bundle(
        "hA",
        &id,
        &as_strs(&["TYPE=vlan".into(), "VLAN=nope".into()]),
        &[],
    );
    let error = lab.start("hA", &id, &bundle).unwrap_err();
    assert!(
        error.contains("no network \\\"nope\\\"; known: test1"),
        "{error}"
    );
    let _ = lab.runc("hA", &["delete", "--force", &id]);

    // doctor says what is missing, and what works.
    let out = lab.macvlan("hA", &["doctor"]);
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("MISSING  802.1Q VLAN"), "{report}");
    assert!(report.contains("load the 8021q module"), "{report}");
    for works in [
        "ok       macvlan",
        "ok       tbf qdisc",
        "ok       ifb",
        "ok       store",
    ] {
        assert!(report.contains(works), "{works}: {report}");
    }
}
