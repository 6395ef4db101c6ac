//! Rollback: a failure at any step after the first change leaves nothing
//! behind (and a failed restart leaves the stopped record as it was).

mod common;

use common::{as_strs, flat_env, must, text, Lab, GATEWAY, UPLINK};
#[cfg(feature = "failpoints")]
use serde_json::json;

/// Arms a failpoint in the bundle's createRuntime hook entry.
#[cfg(feature = "failpoints")]
fn arm(lab: &Lab, bundle: &std::path::Path, failpoint: Option<&str>) {
    let mut config = lab.read_config(bundle);
    let entry = &mut config["hooks"]["createRuntime"][0];
    match failpoint {
        Some(name) => entry["env"] = json!([format!("MACVLAN_FAILPOINT={name}")]),
        None => {
            entry.as_object_mut().unwrap().remove("env");
        }
    }
    lab.write_config(bundle, &config);
}

#[cfg(feature = "failpoints")]
#[test]
fn a_failure_at_any_step_leaves_nothing_behind() {
    let lab = Lab::new(&["hA"]);
    for failpoint in ["after-claim", "after-create", "after-configure"] {
        let id = lab.id(failpoint);
        let bundle = lab.bundle("hA", &id, &as_strs(&flat_env("192.0.2.10/24")), &[]);
        arm(&lab, &bundle, Some(failpoint));
        let error = lab.start("hA", &id, &bundle).unwrap_err();
        assert!(
            error.contains(&format!("container {id}"))
                && error.contains(&format!("failpoint {failpoint} triggered")),
            "{error}"
        );
        assert_eq!(lab.links("hA"), ["lo", UPLINK], "{failpoint}");
        assert!(
            lab.store_keys("hA").is_empty(),
            "{failpoint}: {:?}",
            lab.store_keys("hA")
        );
    }
    // A service registration is undone too, with the link and the address,
    // even after the record was marked running.
    for failpoint in ["after-register", "start-registrar"] {
        let id = lab.id(failpoint);
        let mut env = flat_env("192.0.2.10/24");
        env.extend(["DISCOVER=true".into(), "PORT=80".into()]);
        let bundle = lab.bundle("hA", &id, &as_strs(&env), &[]);
        arm(&lab, &bundle, Some(failpoint));
        let error = lab.start("hA", &id, &bundle).unwrap_err();
        assert!(
            error.contains(&format!("failpoint {failpoint} triggered")),
            "{error}"
        );
        assert_eq!(lab.links("hA"), ["lo", UPLINK], "{failpoint}");
        assert!(
            lab.store_keys("hA").is_empty(),
            "{failpoint}: {:?}",
            lab.store_keys("hA")
        );
        assert!(lab.daemon_pid("hA").is_none());
    }

    // The address is free again: a healthy container takes it.
    let id = lab.id("healthy");
    let bundle = lab.bundle("hA", &id, &as_strs(&flat_env("192.0.2.10/24")), &[]);
    lab.start("hA", &id, &bundle).unwrap();
    assert!(lab.ping("hA", &id, GATEWAY));
}

#[cfg(feature = "failpoints")]
#[test]
fn a_failed_restart_keeps_the_stopped_record_and_its_address() {
    let lab = Lab::new(&["hA"]);
    let id = lab.id("restart");
    let bundle = lab.bundle("hA", &id, &as_strs(&flat_env("192.0.2.20/24")), &[]);
    lab.start("hA", &id, &bundle).unwrap();
    lab.stop("hA", &id);
    let before = lab.records("hA");
    assert_eq!(before[0]["state"], "stopped");

    arm(&lab, &bundle, Some("after-configure"));
    let error = lab.start("hA", &id, &bundle).unwrap_err();
    assert!(
        error.contains("failpoint after-configure triggered"),
        "{error}"
    );
    assert_eq!(lab.records("hA"), before);
    assert!(lab
        .store_keys("hA")
        .contains(&"/macvlan/ipam/_adhoc/192.0.2.20".to_string()));

    arm(&lab, &bundle, None);
    lab.start("hA", &id, &bundle).unwrap();
    assert_eq!(lab.records("hA")[0]["state"], "running");
}

#[test]
fn a_kernel_refusal_after_the_claim_releases_the_address() {
    let lab = Lab::new(&["hA"]);
    let first = lab.id("bridge");
    let bundle = lab.bundle("hA", &first, &as_strs(&flat_env("192.0.2.30/24")), &[]);
    lab.start("hA", &first, &bundle).unwrap();
    // passthru needs the parent to itself: the kernel refuses it while
    // another macvlan sits on lan0, after our address claim.
    let second = lab.id("passthru");
    let mut env = flat_env("192.0.2.31/24");
    env.push("MODE=passthru".into());
    let bundle = lab.bundle("hA", &second, &as_strs(&env), &[]);
    let error = lab.start("hA", &second, &bundle).unwrap_err();
    assert!(error.contains(&format!("container {second}")), "{error}");
    assert!(
        error.contains("create macvlan on lan0: netlink error"),
        "{error}"
    );
    let keys = lab.store_keys("hA");
    assert!(
        !keys
            .iter()
            .any(|k| k.contains(&second) || k.ends_with("/192.0.2.31")),
        "{keys:?}"
    );
    assert_eq!(lab.records("hA").len(), 1);
}

#[test]
fn next_free_ethn_and_an_existing_default_route_is_replaced() {
    let lab = Lab::new(&["hA"]);
    let process = lab.netns_process("hA");
    let pid = process.pid();
    // The process already has an eth0 (one end of a veth pair) and a
    // default route through it.
    let netns = format!("--net=/proc/{pid}/ns/net");
    must(
        "nsenter",
        &[
            &netns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ],
    );
    must("nsenter", &[&netns, "ip", "link", "set", "eth0", "up"]);
    must("nsenter", &[&netns, "ip", "link", "set", "peer0", "up"]);
    must(
        "nsenter",
        &[
            &netns,
            "ip",
            "addr",
            "add",
            "198.51.100.2/24",
            "dev",
            "eth0",
        ],
    );
    must(
        "nsenter",
        &[
            &netns,
            "ip",
            "route",
            "add",
            "default",
            "via",
            "198.51.100.1",
        ],
    );

    let out = lab.macvlan(
        "hA",
        &[
            "attach",
            "--pid",
            &pid.to_string(),
            "--type",
            "flat",
            "--host-interface",
            UPLINK,
            "--ip",
            "192.0.2.40/24",
            "--gateway",
            GATEWAY,
        ],
    );
    let routes = must("nsenter", &[&netns, "ip", "route", "show", "default"]);
    let addresses = must(
        "nsenter",
        &[&netns, "ip", "-o", "-4", "addr", "show", "eth1"],
    );
    drop(process);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("eth1 192.0.2.40/24"), "{}", text(&out));
    assert!(addresses.contains("192.0.2.40/24"), "{addresses}");
    assert_eq!(
        routes.trim(),
        format!("default via {GATEWAY} dev eth1"),
        "{routes}"
    );
    assert_eq!(lab.records("hA")[0]["ifname"], "eth1");
}
