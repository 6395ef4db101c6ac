//! Operator-defined networks on the lab with real runc: `macvlan network`
//! verbs, containers naming a network (and several), the rules every
//! request obeys, joined namespaces, host identity, and schema migration.

mod common;

use common::{as_strs, flat_env, must, run, text, Lab, GATEWAY, MACVLAN, UPLINK};

/// `macvlan network ARGS` on `host`; panics unless it succeeds.
fn network(lab: &Lab, host: &str, args: &[&str]) -> String {
    let mut all = vec!["network"];
    all.extend_from_slice(args);
    let out = lab.macvlan(host, &all);
    assert!(out.status.success(), "{all:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lab's LAN as a network: range .64/28, .65 excluded, gateway .1.
fn create_lan(lab: &Lab, host: &str) {
    lab.create_lan(host, &["--exclude", "192.0.2.65"]);
}

fn addresses(lab: &Lab, host: &str, id: &str) -> Vec<(String, String, Vec<String>)> {
    lab.container_interfaces(host, id)
}

fn set_policy(lab: &Lab, host: &str, from: &str, to: &str) {
    let path = lab.config_path(host);
    let config = std::fs::read_to_string(&path).unwrap();
    assert!(config.contains(from), "{config}");
    std::fs::write(&path, config.replace(from, to)).unwrap();
}

#[test]
fn network_verbs_allocation_restart_and_removal() {
    let lab = Lab::new(&["hA"]);
    // The host's own address on the parent: never handed to a container.
    lab.add_host_address("hA", "192.0.2.66/24");
    create_lan(&lab, "hA");
    let refused = lab.macvlan(
        "hA",
        &[
            "network",
            "create",
            "other",
            "--parent",
            UPLINK,
            "--subnet",
            "192.0.2.128/25",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("subnet 192.0.2.128/25 overlaps network \"lan\" (192.0.2.0/24)"),
        "{}",
        text(&refused)
    );
    let listed = network(&lab, "hA", &["ls"]);
    assert!(
        listed.lines().any(|l| l.starts_with("lan")
            && l.contains("192.0.2.0/24")
            && l.trim_end().ends_with("15")),
        "{listed}"
    );

    // Addresses come from the range, lowest first, skipping .65 (excluded)
    // and .66 (the host's own).
    let first = lab.id("n1");
    let second = lab.id("n2");
    for id in [&first, &second] {
        let bundle = lab.bundle("hA", id, &["NETWORK=lan"], &[]);
        lab.start("hA", id, &bundle).unwrap();
    }
    let one = addresses(&lab, "hA", &first);
    let two = addresses(&lab, "hA", &second);
    assert_eq!(one[0].2, ["192.0.2.64/24"], "{one:?}");
    assert_eq!(two[0].2, ["192.0.2.67/24"], "{two:?}");
    assert!(lab
        .default_route("hA", &first)
        .contains("via 192.0.2.1 dev eth0"));
    assert!(
        lab.ping("hA", &first, GATEWAY),
        "gateway unreachable from {first}"
    );
    let line = lab.log("hA");
    assert!(
        line.contains("event=attach") && line.contains("network=lan"),
        "{line}"
    );
    let keys = lab.store_keys("hA");
    assert!(
        keys.contains(&"/macvlan/ipam/lan/192.0.2.64".to_string()),
        "{keys:?}"
    );
    assert!(keys.contains(&format!("/macvlan/flat/{first}")), "{keys:?}");

    // Restart keeps address and MAC.
    let before = one[0].clone();
    lab.stop("hA", &first);
    let bundle = lab.bundle("hA", &first, &["NETWORK=lan"], &[]);
    // runc delete counts as removal; the record is kept as stopped, so the
    // same id gets the same address back.
    lab.start("hA", &first, &bundle).unwrap();
    assert_eq!(addresses(&lab, "hA", &first)[0], before);

    // An address asked for, with and without the prefix.
    let chosen = lab.id("n3");
    let bundle = lab.bundle(
        "hA",
        &chosen,
        &[],
        &[("macvlan.network", "lan"), ("macvlan.ip", "192.0.2.70/24")],
    );
    lab.start("hA", &chosen, &bundle).unwrap();
    assert_eq!(addresses(&lab, "hA", &chosen)[0].2, ["192.0.2.70/24"]);

    let inspect: serde_json::Value =
        serde_json::from_str(&network(&lab, "hA", &["inspect", "lan"])).unwrap();
    assert_eq!(inspect["used"], 3, "{inspect}");
    assert_eq!(
        inspect["addresses"].as_array().unwrap().len(),
        3,
        "{inspect}"
    );

    // Removal is refused while in use, naming the holders.
    let out = lab.macvlan("hA", &["network", "rm", "lan"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("{first} (192.0.2.64)")) && text(&out).contains("in use by"),
        "{}",
        text(&out)
    );
    for id in [&first, &second, &chosen] {
        lab.stop("hA", id);
    }
    let out = lab.macvlan("hA", &["gc"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(network(&lab, "hA", &["rm", "lan"]).contains("network lan: removed"));
    assert_eq!(lab.store_keys("hA"), ["/macvlan/network-generation"]);
}

#[test]
fn every_refusal_names_its_rule_and_leaves_nothing() {
    let lab = Lab::new(&["hA"]);
    lab.add_host_address("hA", "192.0.2.66/24");
    create_lan(&lab, "hA");
    network(
        &lab,
        "hA",
        &[
            "create",
            "tenant",
            "--parent",
            UPLINK,
            "--vlan",
            "100",
            "--subnet",
            "198.18.0.0/24",
        ],
    );
    network(
        &lab,
        "hA",
        &[
            "create",
            "quiet",
            "--parent",
            UPLINK,
            "--subnet",
            "198.51.100.0/24",
            "--annotations-only",
        ],
    );
    // A device named like the VLAN network's sub-interface (this kernel has
    // no 802.1Q; the name is what an ad-hoc request would give).
    must(
        "ip",
        &[
            "-n",
            &lab.ns("hA"),
            "link",
            "add",
            "lan0.100",
            "type",
            "veth",
            "peer",
            "name",
            "vpeer",
        ],
    );

    // An ad-hoc container holding .200 under /24, for the /25 case.
    let holder = lab.id("holder");
    let bundle = lab.bundle("hA", &holder, &as_strs(&flat_env("192.0.2.200/24")), &[]);
    lab.start("hA", &holder, &bundle).unwrap();
    let keys_before = lab.store_keys("hA");

    let cases: Vec<(Vec<String>, &str)> =
        vec![
        (
            vec!["NETWORK=nope".into()],
            "nope\\\"; known: lan, quiet, tenant",
        ),
        (
            vec!["NETWORK=lan".into(), "IP=192.0.2.100".into()],
            "outside its range 192.0.2.64/28",
        ),
        (
            vec!["NETWORK=lan".into(), "IP=192.0.2.66".into()],
            "an address of this host's lan0",
        ),
        (
            vec!["NETWORK=lan".into(), "IP=192.0.2.1".into()],
            "its gateway's address",
        ),
        (
            vec!["NETWORK=lan".into(), "IP=192.0.2.65".into()],
            "excluded from it",
        ),
        (
            vec!["NETWORK=lan".into(), "IP=192.0.2.68/25".into()],
            "network lan is 192.0.2.0/24; give the address alone or with /24",
        ),
        (
            vec!["NETWORK=quiet".into()],
            "may be requested by annotation only",
        ),
        (
            vec!["TYPE=flat".into(), "HOSTIF=lan0".into(), "IP=192.0.2.200/25".into()],
            "held by container",
        ),
        (
            flat_env("192.0.2.66/24"),
            "is an address of this host's lan0; a container may not take the host's own address",
        ),
        (
            flat_env("192.0.2.65/24"),
            "is an excluded address of network lan",
        ),
        (
            vec![
                "TYPE=flat".into(),
                "HOSTIF=lan0.100".into(),
                "IP=198.18.0.9/24".into(),
            ],
            "is the sub-interface of VLAN network tenant",
        ),
    ];
    for (i, (env, expected)) in cases.iter().enumerate() {
        let id = lab.id(&format!("bad{i}"));
        let bundle = lab.bundle("hA", &id, &as_strs(env), &[]);
        let error = lab
            .start("hA", &id, &bundle)
            .expect_err("should be refused");
        assert!(error.contains(expected), "{env:?}: {error}");
        let _ = lab.runc("hA", &["delete", "--force", &id]);
        assert_eq!(
            lab.store_keys("hA"),
            keys_before,
            "{env:?} left keys behind"
        );
    }
    assert_eq!(
        lab.links("hA")
            .iter()
            .filter(|l| l.starts_with("eth"))
            .count(),
        0
    );

    // The annotation is accepted where the variable is not.
    let id = lab.id("quiet");
    let bundle = lab.bundle("hA", &id, &[], &[("macvlan.network", "quiet")]);
    lab.start("hA", &id, &bundle).unwrap();
    assert_eq!(addresses(&lab, "hA", &id)[0].2, ["198.51.100.2/24"]);
    lab.stop("hA", &id);

    // Ad-hoc requests off (the packaged default), and networks this host
    // does not serve.
    set_policy(
        &lab,
        "hA",
        "allow_adhoc = true",
        "allow_adhoc = false\nnetworks = [\"quiet\"]",
    );
    for (env, expected) in [
        (
            flat_env("192.0.2.201/24"),
            "ad-hoc networks are off on this host ([policy] allow_adhoc = false)",
        ),
        (
            vec!["NETWORK=lan".to_string()],
            "this host does not serve that network",
        ),
    ] {
        let id = lab.id("closed");
        let bundle = lab.bundle("hA", &id, &as_strs(&env), &[]);
        let error = lab
            .start("hA", &id, &bundle)
            .expect_err("should be refused");
        assert!(error.contains(expected), "{env:?}: {error}");
        assert_eq!(
            error.lines().filter(|l| l.contains(expected)).count(),
            1,
            "{error}"
        );
        let _ = lab.runc("hA", &["delete", "--force", &id]);
    }
    lab.stop("hA", &holder);
}

#[test]
fn two_networks_on_one_container_all_or_nothing() {
    let lab = Lab::new(&["hA"]);
    create_lan(&lab, "hA");
    network(
        &lab,
        "hA",
        &[
            "create",
            "storage",
            "--parent",
            UPLINK,
            "--subnet",
            "198.51.100.0/24",
            "--mtu",
            "1400",
        ],
    );
    let id = lab.id("two");
    let env = ["NETWORKS=lan,storage=198.51.100.40"];
    let bundle = lab.bundle("hA", &id, &env, &[]);
    lab.start("hA", &id, &bundle).unwrap();
    let interfaces = addresses(&lab, "hA", &id);
    assert_eq!(interfaces.len(), 2, "{interfaces:?}");
    assert_eq!(
        (interfaces[0].0.as_str(), interfaces[0].2.clone()),
        ("eth0", vec!["192.0.2.64/24".to_string()])
    );
    assert_eq!(
        (interfaces[1].0.as_str(), interfaces[1].2.clone()),
        ("eth1", vec!["198.51.100.40/24".to_string()])
    );
    // One default route, via the first network's gateway.
    let routes = lab.default_route("hA", &id);
    assert_eq!(routes.lines().count(), 1, "{routes}");
    assert!(routes.contains("via 192.0.2.1 dev eth0"), "{routes}");
    let records = lab.records("hA");
    let ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert!(
        ids.contains(&id.as_str()) && ids.contains(&format!("{id}/1").as_str()),
        "{ids:?}"
    );
    assert!(lab.ping("hA", &id, GATEWAY));

    // Restart: both addresses and MACs come back.
    lab.stop("hA", &id);
    assert!(lab.records("hA").iter().all(|r| r["state"] == "stopped"));
    lab.start("hA", &id, &bundle).unwrap();
    assert_eq!(addresses(&lab, "hA", &id), interfaces);
    lab.stop("hA", &id);
    let out = lab.macvlan("hA", &["gc"]);
    assert!(out.status.success(), "{}", text(&out));

    // The second network fails after the first worked: nothing is left.
    let keys_before = lab.store_keys("hA");
    let bad = lab.id("half");
    let bundle = lab.bundle("hA", &bad, &["NETWORKS=lan,storage=198.51.100.0"], &[]);
    let error = lab.start("hA", &bad, &bundle).expect_err("refused");
    assert!(
        error.contains("the network or broadcast address"),
        "{error}"
    );
    let _ = lab.runc("hA", &["delete", "--force", &bad]);
    assert_eq!(lab.store_keys("hA"), keys_before);
    // Failing in setup (not validation): the second address is taken.
    let taker = lab.id("taker");
    let bundle = lab.bundle("hA", &taker, &["NETWORK=storage", "IP=198.51.100.41"], &[]);
    lab.start("hA", &taker, &bundle).unwrap();
    let keys_before = lab.store_keys("hA");
    let bundle = lab.bundle("hA", &bad, &["NETWORKS=lan,storage=198.51.100.41"], &[]);
    let error = lab.start("hA", &bad, &bundle).expect_err("refused");
    assert!(
        error.contains("network storage (attachment 1)") && error.contains("held by container"),
        "{error}"
    );
    let _ = lab.runc("hA", &["delete", "--force", &bad]);
    assert_eq!(lab.store_keys("hA"), keys_before);
    lab.stop("hA", &taker);
}

#[test]
fn a_container_joining_another_namespace_changes_nothing() {
    let lab = Lab::new(&["hA"]);
    create_lan(&lab, "hA");
    let owner = lab.id("owner");
    let bundle = lab.bundle("hA", &owner, &["NETWORK=lan"], &[]);
    lab.start("hA", &owner, &bundle).unwrap();
    let before = addresses(&lab, "hA", &owner);
    let route_before = lab.default_route("hA", &owner);
    let pid = lab.pid("hA", &owner);

    let joiner = lab.id("joiner");
    let bundle = lab.bundle(
        "hA",
        &joiner,
        &["NETWORK=lan", "RATE=1000", "IP=192.0.2.70"],
        &[],
    );
    let mut config = lab.read_config(&bundle);
    for ns in config["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "network" {
            ns["path"] = format!("/proc/{pid}/ns/net").into();
        }
    }
    lab.write_config(&bundle, &config);
    lab.start("hA", &joiner, &bundle).unwrap();
    assert_eq!(addresses(&lab, "hA", &owner), before);
    assert_eq!(lab.default_route("hA", &owner), route_before);
    let qdisc = must(
        "nsenter",
        &[
            &format!("--net=/proc/{pid}/ns/net"),
            "tc",
            "qdisc",
            "show",
            "dev",
            "eth0",
        ],
    );
    assert!(!qdisc.contains("tbf"), "{qdisc}");
    assert!(
        lab.log("hA")
            .contains(&format!("event=skip container={joiner}")),
        "{}",
        lab.log("hA")
    );
    lab.stop("hA", &joiner);
    assert_eq!(addresses(&lab, "hA", &owner), before);
    assert_eq!(lab.records("hA").len(), 1);
    lab.stop("hA", &owner);
}

#[test]
fn records_belong_to_the_host_id_not_the_hostname() {
    let lab = Lab::new(&["hA"]);
    create_lan(&lab, "hA");
    let id = lab.id("renamed");
    let bundle = lab.bundle("hA", &id, &["NETWORK=lan"], &[]);
    lab.start("hA", &id, &bundle).unwrap();
    let record = &lab.records("hA")[0];
    assert_eq!(record["host"], "hA");
    assert_eq!(record["host_id"], "hA-id");
    // The host is renamed while the container runs.
    set_policy(&lab, "hA", "host_name = \"hA\"", "host_name = \"renamed\"");
    let out = lab.macvlan("hA", &["gc"]);
    assert!(text(&out).contains("nothing to release"), "{}", text(&out));
    // A clone with the same name but its own id does not touch it, even
    // once the container is gone.
    let clone = lab.dir.path().join("clone.toml");
    let config = std::fs::read_to_string(lab.config_path("hA")).unwrap();
    std::fs::write(
        &clone,
        config
            .replace("host_id = \"hA-id\"", "host_id = \"clone-id\"")
            .replace("\"renamed\"", "\"hA\""),
    )
    .unwrap();
    lab.stop("hA", &id);
    let out = run(MACVLAN, &["--config", clone.to_str().unwrap(), "gc"]);
    assert!(text(&out).contains("nothing to release"), "{}", text(&out));
    assert_eq!(lab.records("hA").len(), 1);
    // The renamed host itself collects it.
    let out = lab.macvlan("hA", &["gc"]);
    assert!(
        text(&out).contains(&format!("released {id} 192.0.2.64/24")),
        "{}",
        text(&out)
    );
    assert!(lab.records("hA").is_empty());
}

#[test]
fn a_schema_zero_store_is_migrated_once_by_concurrent_openers() {
    let lab = Lab::new(&["hA"]);
    let state = lab.dir.path().join("state-hA.db");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema0.db");
    // A crash midway: the next opener finishes the job.
    std::fs::copy(fixture, &state).unwrap();
    let out = std::process::Command::new(MACVLAN)
        .args(["--config", lab.config_path("hA").to_str().unwrap(), "ls"])
        .env("MACVLAN_FAILPOINT", "migrate-midway")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("check the store's schema"),
        "{}",
        text(&out)
    );
    // Four at once, as hooks of several containers starting together.
    let spawned: Vec<std::process::Child> = (0..4)
        .map(|_| {
            std::process::Command::new(MACVLAN)
                .args([
                    "--config",
                    lab.config_path("hA").to_str().unwrap(),
                    "ls",
                    "--json",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in spawned {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ids: Vec<&str> = records
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["fa", "fb", "fc", "vc1", "dd"]);
    }
    let keys = lab.store_keys("hA");
    assert!(
        keys.contains(&"/macvlan/network/test1".to_string()),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.starts_with("/macvlan/vlan/")),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"/macvlan/ipam/_adhoc/192.0.2.150".to_string()),
        "{keys:?}"
    );
    let log = lab.log("hA");
    assert_eq!(log.matches("192.0.2.10 was held twice").count(), 1, "{log}");
    // The migrated VLAN network works with the VLAN verbs.
    let out = lab.macvlan("hA", &["vlan", "list"]);
    assert!(
        text(&out)
            .lines()
            .any(|l| l.starts_with("test1") && l.contains(" 100 ")),
        "{}",
        text(&out)
    );
    let connection = rusqlite::Connection::open(&state).unwrap();
    let version: u32 = connection
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1);
    let schema: String = connection
        .query_row(
            "SELECT value FROM kv WHERE key = '/macvlan/schema'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(schema, "1");
    // A store from a newer release is refused, saying so.
    connection
        .execute(
            "UPDATE kv SET value = '7' WHERE key = '/macvlan/schema'",
            [],
        )
        .unwrap();
    let out = lab.macvlan("hA", &["ls"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("written by a newer macvlan-runc (schema 7"),
        "{}",
        text(&out)
    );
}

/// ipvlan networks on this kernel, which has no ipvlan: defined in the
/// store, but a container asking for one fails naming the missing kernel
/// feature and leaves nothing; bad modes and flags are refused naming the
/// flag, MODE on an ipvlan network naming the field; doctor says what is
/// missing. (The data path is tested in the QEMU guest: tests/ipvlan_guest.rs.)
#[test]
fn ipvlan_on_a_kernel_without_it_fails_saying_so_and_leaves_nothing() {
    let lab = Lab::new(&["hA"]);
    network(
        &lab,
        "hA",
        &[
            "create",
            "routed",
            "--driver",
            "ipvlan",
            "--mode",
            "l3",
            "--parent",
            UPLINK,
            "--subnet",
            "198.51.100.0/24",
        ],
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&network(&lab, "hA", &["inspect", "routed"])).unwrap();
    assert_eq!(inspect["driver"], "ipvlan", "{inspect}");
    assert_eq!(inspect["ipvlan"]["mode"], "l3", "{inspect}");
    assert_eq!(inspect["ipvlan"]["flag"], "bridge", "{inspect}");
    for (args, expected) in [
        (
            &["--mode", "l4"][..],
            "invalid --mode \"l4\": expected l2, l3 or l3s (ipvlan)",
        ),
        (
            &["--flag", "loud"][..],
            "invalid --flag \"loud\": expected bridge, private or vepa",
        ),
        (
            &["--mode", "l3", "--ipam", "dhcp"][..],
            "--ipam dhcp on ipvlan needs --mode l2",
        ),
    ] {
        let mut all = vec![
            "network", "create", "x", "--driver", "ipvlan", "--parent", UPLINK,
        ];
        if !args.contains(&"dhcp") {
            all.extend(["--subnet", "203.0.113.0/24"]);
        }
        all.extend_from_slice(args);
        let out = lab.macvlan("hA", &all);
        assert!(!out.status.success(), "{all:?}");
        assert!(text(&out).contains(expected), "{}", text(&out));
    }
    let out = lab.macvlan(
        "hA",
        &[
            "network",
            "create",
            "x",
            "--parent",
            UPLINK,
            "--subnet",
            "203.0.113.0/24",
            "--flag",
            "private",
        ],
    );
    assert!(
        text(&out).contains("only for --driver ipvlan"),
        "{}",
        text(&out)
    );

    let keys_before = lab.store_keys("hA");
    for (env, expected) in [
        (
            &["NETWORK=routed"][..],
            "this kernel has no ipvlan support (CONFIG_IPVLAN, module ipvlan)",
        ),
        (
            &["NETWORK=routed", "MODE=private"][..],
            "is an ipvlan network (mode l3); MODE is for macvlan networks",
        ),
    ] {
        let id = lab.id("iv");
        let bundle = lab.bundle("hA", &id, env, &[]);
        let error = lab.start("hA", &id, &bundle).expect_err("refused");
        assert!(error.contains(expected), "{env:?}: {error}");
        let _ = lab.runc("hA", &["delete", "--force", &id]);
        assert_eq!(lab.store_keys("hA"), keys_before);
        assert_eq!(lab.links("hA"), ["lo", UPLINK]);
    }
    let out = lab.macvlan("hA", &["doctor"]);
    assert!(text(&out).contains("MISSING  ipvlan:"), "{}", text(&out));
    assert!(text(&out).contains("MISSING  ipvlan L3S"), "{}", text(&out));
}

/// A network's rate is a default and a ceiling: a container gets it, may ask
/// for less, and is refused more (naming the cap), with nothing left.
#[test]
fn a_network_caps_the_rate_of_its_containers() {
    let lab = Lab::new(&["hA"]);
    lab.create_lan("hA", &["--rate", "10000"]);
    let capped = lab.id("capped");
    let bundle = lab.bundle("hA", &capped, &["NETWORK=lan"], &[]);
    lab.start("hA", &capped, &bundle).unwrap();
    let less = lab.id("less");
    let bundle = lab.bundle("hA", &less, &["NETWORK=lan", "RATE=5000"], &[]);
    lab.start("hA", &less, &bundle).unwrap();
    for (id, rate) in [(&capped, 10000), (&less, 5000)] {
        let out = lab.macvlan("hA", &["inspect", id]);
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(value["kernel"]["egress"]["rate_kbit"], rate, "{value}");
    }
    let keys_before = lab.store_keys("hA");
    let more = lab.id("more");
    let bundle = lab.bundle("hA", &more, &["NETWORK=lan", "RATE=50000"], &[]);
    let error = lab.start("hA", &more, &bundle).expect_err("refused");
    assert!(
        error.contains("network lan allows at most 10000 kbit/s"),
        "{error}"
    );
    let _ = lab.runc("hA", &["delete", "--force", &more]);
    assert_eq!(lab.store_keys("hA"), keys_before);
    lab.stop("hA", &capped);
    lab.stop("hA", &less);
}
