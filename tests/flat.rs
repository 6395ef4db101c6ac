//! Flat networks end to end: real kernel, real runc, busybox containers in
//! lab namespaces (DESIGN.md §4).

mod common;

use common::{as_strs, flat_env, must, run, text, Lab, GATEWAY, MACVLAN, UPLINK};

#[test]
fn containers_on_two_hosts_reach_each_other_and_the_gateway() {
    let lab = Lab::new(&["hA", "hB"]);
    let a1 = lab.id("a1");
    let a2 = lab.id("a2");
    let b1 = lab.id("b1");
    for (host, id, ip) in [
        ("hA", &a1, "192.0.2.11/24"),
        ("hA", &a2, "192.0.2.12/24"),
        ("hB", &b1, "192.0.2.21/24"),
    ] {
        let bundle = lab.bundle(host, id, &as_strs(&flat_env(ip)), &[]);
        lab.start(host, id, &bundle).expect("container starts");
        let interfaces = lab.container_interfaces(host, id);
        assert_eq!(interfaces.len(), 1, "{interfaces:?}");
        assert_eq!(interfaces[0].0, "eth0");
        assert_eq!(interfaces[0].2, vec![ip.to_string()]);
        assert!(
            lab.default_route(host, id)
                .contains(&format!("default via {GATEWAY} dev eth0")),
            "{}",
            lab.default_route(host, id)
        );
    }
    assert!(lab.ping("hA", &a1, GATEWAY), "a1 -> gateway");
    assert!(lab.ping("hA", &a1, "192.0.2.12"), "a1 -> a2 (same host)");
    assert!(lab.ping("hA", &a2, "192.0.2.21"), "a2 -> b1 (other host)");
    assert!(lab.ping("hB", &b1, "192.0.2.11"), "b1 -> a1 (other host)");
    assert!(lab.ping("hB", &b1, GATEWAY), "b1 -> gateway");
    // The gateway (a plain machine on the LAN) reaches a container too.
    must(
        "nsenter",
        &[
            &format!("--net=/run/netns/{}", lab.ns("gw")),
            "busybox",
            "ping",
            "-c",
            "2",
            "-W",
            "3",
            "192.0.2.11",
        ],
    );
    // Nothing was added to the hosts' own namespaces.
    assert_eq!(lab.links("hA"), ["lo", UPLINK]);
    assert_eq!(lab.links("hB"), ["lo", UPLINK]);
    // One structured line per attach.
    let log = lab.log("hA");
    let line = log
        .lines()
        .find(|l| l.contains(&format!("container={a1}")))
        .expect("log line");
    for field in [
        "level=info",
        "event=attach",
        "type=flat",
        "address=192.0.2.11/24",
        "duration_ms=",
    ] {
        assert!(line.contains(field), "{line}");
    }
    // The records are in the store under the contract's keys.
    let keys = lab.store_keys("hA");
    assert!(keys.contains(&format!("/macvlan/flat/{a1}")), "{keys:?}");
    assert!(
        keys.contains(&"/macvlan/ipam/_adhoc/192.0.2.11".to_string()),
        "{keys:?}"
    );
}

#[test]
fn annotations_work_and_win_over_environment() {
    let lab = Lab::new(&["hA"]);
    let only_annotations = lab.id("ann");
    let bundle = lab.bundle(
        "hA",
        &only_annotations,
        &[],
        &[
            ("macvlan.type", "flat"),
            ("macvlan.host-interface", UPLINK),
            ("macvlan.ip", "192.0.2.30/24"),
            ("macvlan.gateway", GATEWAY),
            ("macvlan.mtu", "1400"),
            ("macvlan.mode", "private"),
        ],
    );
    lab.start("hA", &only_annotations, &bundle).unwrap();
    assert_eq!(
        lab.container_interfaces("hA", &only_annotations)[0].2,
        ["192.0.2.30/24"]
    );
    let pid = lab.pid("hA", &only_annotations);
    let details = must(
        "nsenter",
        &[
            &format!("--net=/proc/{pid}/ns/net"),
            "ip",
            "-d",
            "link",
            "show",
            "eth0",
        ],
    );
    assert!(details.contains("mtu 1400"), "{details}");
    assert!(details.contains("macvlan mode private"), "{details}");

    let both = lab.id("both");
    let bundle = lab.bundle(
        "hA",
        &both,
        &as_strs(&flat_env("192.0.2.31/24")),
        &[("macvlan.ip", "192.0.2.32/24")],
    );
    lab.start("hA", &both, &bundle).unwrap();
    assert_eq!(
        lab.container_interfaces("hA", &both)[0].2,
        ["192.0.2.32/24"]
    );
    assert!(!lab
        .store_keys("hA")
        .iter()
        .any(|k| k.ends_with("/192.0.2.31")));
}

#[test]
fn restart_keeps_address_and_mac() {
    let lab = Lab::new(&["hA"]);
    let id = lab.id("r");
    let bundle = lab.bundle("hA", &id, &as_strs(&flat_env("192.0.2.40/24")), &[]);
    lab.start("hA", &id, &bundle).unwrap();
    let before = lab.container_interfaces("hA", &id);
    lab.stop("hA", &id);
    let records = lab.records("hA");
    assert_eq!(records[0]["state"], "stopped", "{records:?}");
    assert_eq!(records[0]["ip"], "192.0.2.40/24");
    lab.start("hA", &id, &bundle).unwrap();
    let after = lab.container_interfaces("hA", &id);
    assert_eq!(before, after);
    assert_eq!(lab.records("hA")[0]["state"], "running");
    assert!(lab.ping("hA", &id, GATEWAY));
}

#[test]
fn duplicate_address_is_refused_naming_the_holder() {
    let lab = Lab::new(&["hA"]);
    let first = lab.id("first");
    let second = lab.id("second");
    let bundle = lab.bundle("hA", &first, &as_strs(&flat_env("192.0.2.50/24")), &[]);
    lab.start("hA", &first, &bundle).unwrap();
    let bundle = lab.bundle("hA", &second, &as_strs(&flat_env("192.0.2.50/24")), &[]);
    let error = lab.start("hA", &second, &bundle).unwrap_err();
    assert!(
        error.contains(&format!("container {second}"))
            && error.contains(&format!("address 192.0.2.50 is held by container {first}")),
        "{error}"
    );
    assert_eq!(lab.records("hA").len(), 1);
    assert_eq!(lab.links("hA"), ["lo", UPLINK]);
    let log = lab.log("hA");
    assert!(
        log.lines().any(|l| l.contains("level=error")
            && l.contains(&format!("container={second}"))
            && l.contains("held by")),
        "{log}"
    );
}

#[test]
fn bad_requests_are_refused_naming_the_field_and_leave_nothing() {
    let lab = Lab::new(&["hA"]);
    let good = flat_env("192.0.2.60/24");
    let with = |key: &str, value: &str| -> Vec<String> {
        let mut env: Vec<String> = good
            .iter()
            .filter(|e| !e.starts_with(&format!("{key}=")))
            .cloned()
            .collect();
        env.push(format!("{key}={value}"));
        env
    };
    let without = |key: &str| -> Vec<String> {
        good.iter()
            .filter(|e| !e.starts_with(&format!("{key}=")))
            .cloned()
            .collect()
    };
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("octet", with("IP", "192.0.2.256/24"), "IP"),
        ("no-prefix", with("IP", "192.0.2.60"), "IP"),
        ("prefix", with("IP", "192.0.2.60/33"), "IP"),
        ("garbage-ip", with("IP", "lots-of-addresses"), "IP"),
        ("network", with("IP", "192.0.2.0/24"), "IP"),
        ("broadcast", with("IP", "192.0.2.255/24"), "IP"),
        ("gw-address", with("IP", "192.0.2.1/24"), "IP"),
        ("gw-off-subnet", with("GW", "198.51.100.1"), "GW"),
        ("gw-garbage", with("GW", "gateway"), "GW"),
        ("parent", with("HOSTIF", "nosuch0"), "HOSTIF"),
        ("parent-name", with("HOSTIF", "../../etc"), "HOSTIF"),
        ("type", with("TYPE", "overlay"), "TYPE"),
        ("mode", with("MODE", "turbo"), "MODE"),
        ("mtu-low", with("MTU", "67"), "MTU"),
        ("mtu-parent", with("MTU", "9000"), "MTU"),
        ("mtu-garbage", with("MTU", "big"), "MTU"),
        ("no-ip", without("IP"), "IP"),
        ("no-hostif", without("HOSTIF"), "HOSTIF"),
        ("no-type", without("TYPE"), "NETWORK"),
    ];
    assert!(cases.len() >= 15);
    for (short, env, field) in cases {
        let id = lab.id(short);
        let bundle = lab.bundle("hA", &id, &as_strs(&env), &[]);
        let error = lab
            .start("hA", &id, &bundle)
            .expect_err(&format!("{short}: should be refused"));
        assert!(
            error.contains(&format!("container {id}")),
            "{short}: {error}"
        );
        assert!(
            error.contains(field),
            "{short}: expected {field} in: {error}"
        );
        assert!(
            error.contains("expected")
                || error.contains("must be")
                || error.contains("required")
                || error.contains("no such interface")
                || error.contains("is the")
                || error.contains("outside")
                || error.contains("name one with"),
            "{short}: says what would be accepted: {error}"
        );
        assert_eq!(lab.links("hA"), ["lo", UPLINK], "{short}: link left behind");
        assert!(
            lab.store_keys("hA").is_empty(),
            "{short}: record left behind"
        );
        let listed = lab.runc("hA", &["list", "-q"]);
        assert!(
            !String::from_utf8_lossy(&listed.stdout)
                .lines()
                .any(|l| l == id),
            "{short}: container left behind"
        );
    }
}

#[test]
fn container_in_the_host_network_namespace_is_refused() {
    let lab = Lab::new(&["hA"]);
    let id = lab.id("hostnet");
    let bundle = lab.bundle("hA", &id, &as_strs(&flat_env("192.0.2.70/24")), &[]);
    let mut config = lab.read_config(&bundle);
    let namespaces = config["linux"]["namespaces"].as_array_mut().unwrap();
    namespaces.retain(|ns| ns["type"] != "network");
    lab.write_config(&bundle, &config);
    let error = lab.start("hA", &id, &bundle).unwrap_err();
    assert!(
        error.contains("shares the host's network namespace"),
        "{error}"
    );
    assert_eq!(lab.links("hA"), ["lo", UPLINK]);
    assert!(lab.store_keys("hA").is_empty());

    // The same for `macvlan attach` on a process that lives in host A's own namespace.
    let sleeper = lab.host_process("hA");
    let out = lab.macvlan(
        "hA",
        &[
            "attach",
            "--pid",
            &sleeper.pid().to_string(),
            "--type",
            "flat",
            "--host-interface",
            UPLINK,
            "--ip",
            "192.0.2.71/24",
        ],
    );
    drop(sleeper);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("shares the host's network namespace"),
        "{}",
        text(&out)
    );
    assert!(lab.store_keys("hA").is_empty());
}

#[test]
fn poststop_is_idempotent_and_accepts_unknown_ids() {
    let lab = Lab::new(&["hA"]);
    let id = lab.id("ps");
    let bundle = lab.bundle("hA", &id, &as_strs(&flat_env("192.0.2.80/24")), &[]);
    lab.start("hA", &id, &bundle).unwrap();
    lab.stop("hA", &id);
    let cfg = lab.config_path("hA");
    for state_id in [id.as_str(), id.as_str(), "never-seen-container"] {
        let state = format!(
            r#"{{"ociVersion":"1.0.2","id":"{state_id}","status":"stopped","bundle":"{}"}}"#,
            bundle.display()
        );
        let mut child = std::process::Command::new(MACVLAN)
            .args(["--config", cfg.to_str().unwrap(), "hook", "poststop"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(state.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    // Without a stage, the stage comes from the status.
    let state = format!(r#"{{"id":"{id}","status":"stopped"}}"#);
    let out = run(
        "sh",
        &[
            "-c",
            &format!("echo '{state}' | {MACVLAN} --config {} hook", cfg.display()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let records = lab.records("hA");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["state"], "stopped");
}

#[test]
fn containers_that_ask_for_nothing_are_untouched() {
    let lab = Lab::new(&["hA"]);
    let id = lab.id("plain");
    let bundle = lab.bundle("hA", &id, &[], &[]);
    lab.start("hA", &id, &bundle).unwrap();
    assert!(lab.container_interfaces("hA", &id).is_empty());
    assert!(lab.store_keys("hA").is_empty());
    assert!(lab.log("hA").is_empty());
}

#[test]
fn thirty_two_parallel_containers_get_distinct_addresses() {
    let lab = Lab::new(&["hA"]);
    let ids: Vec<String> = (0..32).map(|i| lab.id(&format!("p{i}"))).collect();
    let bundles: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            lab.bundle(
                "hA",
                id,
                &as_strs(&flat_env(&format!("192.0.2.{}/24", 100 + i))),
                &[],
            )
        })
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = ids
            .iter()
            .zip(&bundles)
            .map(|(id, bundle)| scope.spawn(|| lab.start("hA", id, bundle)))
            .collect();
        for handle in handles {
            handle.join().unwrap().expect("parallel start");
        }
    });
    let mut seen = std::collections::BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let interfaces = lab.container_interfaces("hA", id);
        assert_eq!(interfaces[0].2, [format!("192.0.2.{}/24", 100 + i)]);
        assert!(seen.insert(interfaces[0].1.clone()), "duplicate MAC");
    }
    assert_eq!(lab.records("hA").len(), 32);
    assert!(lab.ping("hA", &ids[0], "192.0.2.131"));
}

#[test]
fn parallel_containers_asking_for_one_address_get_it_once() {
    let lab = Lab::new(&["hA"]);
    let ids: Vec<String> = (0..8).map(|i| lab.id(&format!("race{i}"))).collect();
    let bundles: Vec<_> = ids
        .iter()
        .map(|id| lab.bundle("hA", id, &as_strs(&flat_env("192.0.2.90/24")), &[]))
        .collect();
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ids
            .iter()
            .zip(&bundles)
            .map(|(id, bundle)| scope.spawn(|| lab.start("hA", id, bundle)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for error in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(error.contains("held by container"), "{error}");
    }
    assert_eq!(lab.records("hA").len(), 1);
}

#[test]
fn attach_and_detach_a_running_process() {
    let lab = Lab::new(&["hA"]);
    // A process with a network namespace of its own, started from host A.
    let process = lab.netns_process("hA");
    let pid = process.pid();
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
            "192.0.2.95/24",
            "--gateway",
            GATEWAY,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let netns = process.nsenter_arg();
    let addrs = must(
        "nsenter",
        &[&netns, "ip", "-o", "-4", "addr", "show", "eth0"],
    );
    assert!(addrs.contains("192.0.2.95/24"), "{addrs}");
    must(
        "nsenter",
        &[&netns, "busybox", "ping", "-c", "2", "-W", "3", GATEWAY],
    );
    let out = lab.macvlan("hA", &["inspect", &format!("pid-{pid}")]);
    assert!(text(&out).contains("192.0.2.95/24"), "{}", text(&out));

    let out = lab.macvlan("hA", &["detach", "--pid", &pid.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let links = must("nsenter", &[&netns, "ip", "-o", "link"]);
    assert!(!links.contains("eth0"), "{links}");
    assert!(lab.store_keys("hA").is_empty());
}

#[test]
fn missing_privileges_are_named() {
    let lab = Lab::new(&["hA"]);
    let cfg = lab.config_path("hA");
    let out = run(
        "setpriv",
        &[
            "--bounding-set=-net_admin",
            "--inh-caps=-net_admin",
            MACVLAN,
            "--config",
            cfg.to_str().unwrap(),
            "attach",
            "--pid",
            "1",
            "--type",
            "flat",
            "--host-interface",
            UPLINK,
            "--ip",
            "192.0.2.96/24",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("missing privileges: CAP_NET_ADMIN"),
        "{}",
        text(&out)
    );
}
