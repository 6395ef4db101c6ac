//! IPv6 on the lab with real runc: dual-stack and IPv6-only networks with
//! static addresses (usable at once, link-local gateway), ad-hoc IP6/GW6,
//! no stray addresses, announcements seen by the gateway, refusals, and a
//! namespace whose IPv6 was disabled.

mod common;

use common::{must, run, text, Lab, UPLINK};
use serde_json::Value;

fn ipv6_gateway(lab: &Lab) {
    lab.add_gateway_ipv6();
}

/// `macvlan network ARGS` on `host`; panics unless it succeeds.
fn network(lab: &Lab, host: &str, args: &[&str]) -> String {
    let mut all = vec!["network"];
    all.extend_from_slice(args);
    let out = lab.macvlan(host, &all);
    assert!(out.status.success(), "{all:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (family, local/prefix, flags) of eth0's addresses inside the container.
fn eth0_addresses(lab: &Lab, host: &str, id: &str) -> Vec<(String, String, Vec<String>)> {
    let value = lab.container_addresses(host, id);
    let eth0 = value
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ifname"] == "eth0")
        .unwrap_or_else(|| panic!("no eth0 in {value}"));
    eth0["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let flags = ["tentative", "optimistic", "dadfailed", "nodad", "dynamic"]
                .iter()
                .filter(|f| a[**f].as_bool().unwrap_or(false))
                .map(|f| f.to_string())
                .collect();
            (
                a["family"].as_str().unwrap().to_string(),
                format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]),
                flags,
            )
        })
        .collect()
}

fn globals6(addresses: &[(String, String, Vec<String>)]) -> Vec<String> {
    addresses
        .iter()
        .filter(|(family, local, _)| family == "inet6" && !local.starts_with("fe80:"))
        .map(|(_, local, _)| local.clone())
        .collect()
}

fn in_container(lab: &Lab, host: &str, id: &str, args: &[&str]) -> String {
    let pid = lab.pid(host, id);
    let netns = format!("--net=/proc/{pid}/ns/net");
    let mut all = vec![netns.as_str()];
    all.extend_from_slice(args);
    must("nsenter", &all)
}

fn sysctl(lab: &Lab, host: &str, id: &str, key: &str) -> String {
    in_container(
        lab,
        host,
        id,
        &["cat", &format!("/proc/sys/net/ipv6/conf/eth0/{key}")],
    )
    .trim()
    .to_string()
}

fn ping6(lab: &Lab, host: &str, id: &str, address: &str) -> bool {
    lab.exec(host, id, &["ping", "-6", "-c", "2", "-W", "3", address])
        .status
        .success()
}

/// The gateway's neighbour entry for `address`: its MAC, if it has one.
fn gateway_neighbour(lab: &Lab, address: &str) -> Option<String> {
    let out = must(
        "ip",
        &["-n", &lab.ns("gw"), "-j", "neigh", "show", "to", address],
    );
    let entries: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    entries
        .as_array()?
        .iter()
        .find_map(|e| e["lladdr"].as_str().map(str::to_string))
}

#[test]
fn dual_stack_static_addresses_usable_at_once_announced_and_kept_across_restart() {
    let lab = Lab::new(&["hA", "hB"]);
    ipv6_gateway(&lab);
    let created = network(
        &lab,
        "hA",
        &[
            "create",
            "lan",
            "--parent",
            UPLINK,
            "--subnet",
            "192.0.2.0/24",
            "--gateway",
            "192.0.2.1",
            "--ip-range",
            "192.0.2.64/28",
            "--subnet6",
            "2001:db8:1::/64",
            "--ip-range6",
            "2001:db8:1::100/120",
            "--gateway6",
            "fe80::1",
        ],
    );
    assert!(
        created.contains(
            "IPv6 static subnet 2001:db8:1::/64 range 2001:db8:1::100/120 gateway fe80::1"
        ),
        "{created}"
    );
    let listed = network(&lab, "hA", &["ls"]);
    assert!(listed.contains("static 2001:db8:1::/64"), "{listed}");

    // A stale entry for the first address, as a container moved from
    // another host leaves behind: the announcement must replace it.
    for address in ["192.0.2.64", "2001:db8:1::100"] {
        must(
            "ip",
            &[
                "-n",
                &lab.ns("gw"),
                "neigh",
                "replace",
                address,
                "lladdr",
                "02:00:00:00:00:99",
                "nud",
                "stale",
                "dev",
                UPLINK,
            ],
        );
    }

    let first = lab.id("d1");
    let second = lab.id("d2");
    let bundle = lab.bundle("hA", &first, &["NETWORK=lan"], &[]);
    lab.start("hA", &first, &bundle).unwrap();
    // The second asks for its IPv6 address, written in a non-canonical form.
    let bundle = lab.bundle(
        "hA",
        &second,
        &["NETWORK=lan", "IP6=2001:DB8:1:0::1AB"],
        &[],
    );
    lab.start("hA", &second, &bundle).unwrap();

    // Usable the moment the process runs: no tentative flag, no DAD wait.
    let one = eth0_addresses(&lab, "hA", &first);
    assert!(
        one.iter()
            .any(|(f, l, _)| f == "inet" && l == "192.0.2.64/24"),
        "{one:?}"
    );
    let own6: Vec<&(String, String, Vec<String>)> = one
        .iter()
        .filter(|(f, l, _)| f == "inet6" && l == "2001:db8:1::100/64")
        .collect();
    assert_eq!(own6.len(), 1, "{one:?}");
    assert!(
        own6[0].2.contains(&"nodad".to_string()) && !own6[0].2.contains(&"tentative".to_string()),
        "{one:?}"
    );
    // Nothing but the static address and the link-local one.
    assert_eq!(globals6(&one), ["2001:db8:1::100/64"], "{one:?}");
    assert_eq!(sysctl(&lab, "hA", &first, "accept_ra"), "0");
    assert_eq!(sysctl(&lab, "hA", &first, "autoconf"), "0");
    let two = eth0_addresses(&lab, "hA", &second);
    assert_eq!(globals6(&two), ["2001:db8:1::1ab/64"], "{two:?}");

    // The default route via the link-local gateway, on the interface.
    let route6 = in_container(
        &lab,
        "hA",
        &first,
        &["ip", "-6", "route", "show", "default"],
    );
    assert!(route6.contains("via fe80::1 dev eth0"), "{route6}");

    // The gateway learnt the container's MAC from the announcements
    // alone (gratuitous ARP, unsolicited NA), replacing the stale one.
    let mac = one_mac(&lab, "hA", &first);
    common::wait_for(
        std::time::Duration::from_secs(5),
        "the gateway learns both addresses",
        || {
            gateway_neighbour(&lab, "192.0.2.64").as_deref() == Some(mac.as_str())
                && gateway_neighbour(&lab, "2001:db8:1::100").as_deref() == Some(mac.as_str())
        },
    );

    // Both families reach the gateway and each other.
    assert!(lab.ping("hA", &first, "192.0.2.1"));
    assert!(ping6(&lab, "hA", &first, "2001:db8:1::1"));
    assert!(ping6(&lab, "hA", &first, "2001:db8:1::1ab"));
    assert!(lab.ping("hA", &second, "192.0.2.64"));

    // A dual-stack container on a second host (its own store: the network
    // defined there with its own ranges) reaches both over both families.
    network(
        &lab,
        "hB",
        &[
            "create",
            "lan",
            "--parent",
            UPLINK,
            "--subnet",
            "192.0.2.0/24",
            "--ip-range",
            "192.0.2.96/28",
            "--subnet6",
            "2001:db8:1::/64",
            "--ip-range6",
            "2001:db8:1::200/120",
            "--gateway6",
            "fe80::1",
        ],
    );
    let remote = lab.id("d4");
    let bundle = lab.bundle("hB", &remote, &["NETWORK=lan"], &[]);
    lab.start("hB", &remote, &bundle).unwrap();
    assert_eq!(
        globals6(&eth0_addresses(&lab, "hB", &remote)),
        ["2001:db8:1::200/64"]
    );
    assert!(ping6(&lab, "hB", &remote, "2001:db8:1::100"));
    assert!(ping6(&lab, "hB", &remote, "2001:db8:1::1"));
    assert!(lab.ping("hB", &remote, "192.0.2.64"));
    assert!(ping6(&lab, "hA", &first, "2001:db8:1::200"));
    lab.stop("hB", &remote);

    // The records and keys: one key per address, canonical text.
    let records = lab.records("hA");
    let record = records
        .iter()
        .find(|r| r["ip"] == "192.0.2.64/24")
        .unwrap_or_else(|| panic!("{records:?}"));
    assert_eq!(record["ip6"], "2001:db8:1::100/64");
    assert_eq!(record["gateway6"], "fe80::1");
    let keys = lab.store_keys("hA");
    assert!(
        keys.iter()
            .any(|k| k.ends_with("/ipam/lan/2001:db8:1::1ab")),
        "{keys:?}"
    );
    let inspect: Value = serde_json::from_str(&network(&lab, "hA", &["inspect", "lan"])).unwrap();
    assert_eq!(inspect["used"], 2, "{inspect}");
    assert_eq!(
        inspect["addresses"].as_array().unwrap().len(),
        4,
        "{inspect}"
    );

    // Another container asking for a taken IPv6 address gets nothing.
    let third = lab.id("d3");
    let bundle = lab.bundle("hA", &third, &["NETWORK=lan", "IP6=2001:db8:1::100"], &[]);
    let refused = lab.start("hA", &third, &bundle).unwrap_err();
    assert!(
        refused.contains("2001:db8:1::100 is held by container"),
        "{refused}"
    );
    assert_eq!(lab.records("hA").len(), 2);

    // Restart: the same addresses and MAC, at once.
    lab.stop("hA", &first);
    let bundle = lab.bundle("hA", &first, &["NETWORK=lan"], &[]);
    lab.start("hA", &first, &bundle).unwrap();
    let again = eth0_addresses(&lab, "hA", &first);
    assert_eq!(globals6(&again), ["2001:db8:1::100/64"], "{again:?}");
    assert!(
        again
            .iter()
            .any(|(f, l, _)| f == "inet" && l == "192.0.2.64/24"),
        "{again:?}"
    );
    assert_eq!(one_mac(&lab, "hA", &first), mac);

    for id in [&first, &second] {
        lab.stop("hA", id);
        let out = lab.macvlan("hA", &["detach", "--id", id]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let left: Vec<String> = lab
        .store_keys("hA")
        .into_iter()
        .filter(|k| k.contains("/ipam/"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn one_mac(lab: &Lab, host: &str, id: &str) -> String {
    lab.container_interfaces(host, id)
        .into_iter()
        .find(|(name, _, _)| name == "eth0")
        .map(|(_, mac, _)| mac)
        .expect("eth0")
}

#[test]
fn ipv6_only_network_and_ipv4_only_interfaces_have_no_stray_ipv6() {
    let lab = Lab::new(&["hA"]);
    ipv6_gateway(&lab);
    network(
        &lab,
        "hA",
        &[
            "create",
            "six",
            "--parent",
            UPLINK,
            "--ipv6",
            "static",
            "--subnet6",
            "2001:db8:1::/64",
            "--ip-range6",
            "2001:db8:1::200/124",
        ],
    );
    let only6 = lab.id("o6");
    let bundle = lab.bundle("hA", &only6, &["NETWORK=six"], &[]);
    lab.start("hA", &only6, &bundle).unwrap();
    let addresses = eth0_addresses(&lab, "hA", &only6);
    assert!(
        addresses.iter().all(|(f, _, _)| f == "inet6"),
        "{addresses:?}"
    );
    assert_eq!(globals6(&addresses), ["2001:db8:1::200/64"]);
    // Default gateway: the subnet's first address.
    let route6 = in_container(
        &lab,
        "hA",
        &only6,
        &["ip", "-6", "route", "show", "default"],
    );
    assert!(route6.contains("via 2001:db8:1::1 dev eth0"), "{route6}");
    assert!(ping6(&lab, "hA", &only6, "2001:db8:1::1"));

    // An IPv4-only network's container: IPv6 off on its interface (not
    // even a link-local address), so no RA can give it one.
    lab.create_lan("hA", &[]);
    let only4 = lab.id("o4");
    let bundle = lab.bundle("hA", &only4, &["NETWORK=lan"], &[]);
    lab.start("hA", &only4, &bundle).unwrap();
    let addresses = eth0_addresses(&lab, "hA", &only4);
    assert!(
        addresses.iter().all(|(f, _, _)| f == "inet"),
        "{addresses:?}"
    );
    assert_eq!(sysctl(&lab, "hA", &only4, "disable_ipv6"), "1");

    // Refusals for IPv6 requests on these networks, one line each.
    for (env, expected) in [
        (
            vec!["NETWORK=lan", "IP6=2001:db8:1::5"],
            "invalid IP6/macvlan.ip6 \"2001:db8:1::5\": network lan has no IPv6",
        ),
        (
            vec!["NETWORK=six", "IP=192.0.2.70"],
            "network six is IPv6-only; give IP6 instead",
        ),
        (
            vec!["NETWORK=six", "IP6=2001:db8:2::5"],
            "outside its subnet 2001:db8:1::/64",
        ),
        (
            vec!["NETWORK=six", "IP6=2001:db8:1::5/48"],
            "network six is 2001:db8:1::/64; give the address alone or with /64",
        ),
    ] {
        let id = lab.id("bad");
        let bundle = lab.bundle("hA", &id, &env, &[]);
        // runc escapes the hook's quotes.
        let error = lab.start("hA", &id, &bundle).unwrap_err().replace('\\', "");
        assert!(error.contains(expected), "{env:?}: {error}");
    }
    assert_eq!(lab.records("hA").len(), 2);
}

#[test]
fn ad_hoc_ip6_and_every_refusal_in_one_line() {
    let lab = Lab::new(&["hA"]);
    ipv6_gateway(&lab);
    let id = lab.id("a1");
    let bundle = lab.bundle(
        "hA",
        &id,
        &[
            "TYPE=flat",
            "HOSTIF=lan0",
            "IP=192.0.2.20/24",
            "GW=192.0.2.1",
            "IP6=2001:db8:1::20/64",
            "GW6=fe80::1",
        ],
        &[],
    );
    lab.start("hA", &id, &bundle).unwrap();
    let addresses = eth0_addresses(&lab, "hA", &id);
    assert_eq!(globals6(&addresses), ["2001:db8:1::20/64"]);
    assert!(ping6(&lab, "hA", &id, "2001:db8:1::1"));
    let keys = lab.store_keys("hA");
    assert!(
        keys.iter()
            .any(|k| k.ends_with("/ipam/_adhoc/2001:db8:1::20")),
        "{keys:?}"
    );

    let base = ["TYPE=flat", "HOSTIF=lan0", "IP=192.0.2.21/24"];
    for (extra, expected) in [
        (vec!["IP6=192.0.2.21/24"], "invalid IP6 \"192.0.2.21/24\": is an IPv4 address"),
        (vec!["IP6=fe80::5/64"], "invalid IP6 \"fe80::5/64\": fe80::5 is a link-local address"),
        (vec!["IP6=ff02::5/64"], "is a multicast address"),
        (vec!["IP6=::/64"], "is the unspecified address"),
        (vec!["IP6=::1/128"], "is the loopback address"),
        (vec!["IP6=2001:db8:1::21/129"], "expected a prefix length from 1 to 128"),
        (vec!["IP6=2001:db8:1::21"], "missing the prefix length"),
        (
            vec!["IP6=2001:db8:1::21/64", "GW6=2001:db8:9::1"],
            "invalid GW6 \"2001:db8:9::1\": outside the container's subnet 2001:db8:1::/64 and not link-local",
        ),
        (vec!["GW6=fe80::1"], "invalid GW6 \"fe80::1\": needs IP6"),
        (
            vec!["IP6=2001:db8:1::20/64"],
            "2001:db8:1::20 is held by container",
        ),
    ] {
        let bad = lab.id("bad");
        let mut env: Vec<&str> = base.to_vec();
        env.extend(extra.iter().copied());
        let bundle = lab.bundle("hA", &bad, &env, &[]);
        let error = lab.start("hA", &bad, &bundle).unwrap_err().replace('\\', "");
        assert!(error.contains(expected), "{extra:?}: {error}");
        let line = error
            .lines()
            .find(|l| l.contains(expected))
            .unwrap_or_default();
        assert!(line.contains("IP6") || line.contains("GW6") || line.contains("held"), "{line}");
    }
    // Nothing left behind by any refusal: one record, its two keys.
    assert_eq!(lab.records("hA").len(), 1);
    let held: Vec<String> = lab
        .store_keys("hA")
        .into_iter()
        .filter(|k| k.contains("/ipam/"))
        .collect();
    assert_eq!(held.len(), 2, "{held:?}");
}

#[test]
fn a_namespace_with_ipv6_disabled_gets_it_back_on_our_interface_only() {
    let lab = Lab::new(&["hA"]);
    ipv6_gateway(&lab);
    let process = lab.netns_process("hA");
    let netns = process.nsenter_arg();
    // As an engine that turned IPv6 off in the namespace would have.
    for key in [
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ] {
        must("nsenter", &[&netns, "sysctl", "-q", "-w", key]);
    }
    let pid = process.pid().to_string();
    let out = lab.macvlan(
        "hA",
        &[
            "attach",
            "--pid",
            &pid,
            "--id",
            "dis6",
            "--type",
            "flat",
            "--host-interface",
            UPLINK,
            "--ip",
            "192.0.2.30/24",
            "--ip6",
            "2001:db8:1::30/64",
            "--gateway6",
            "fe80::1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let shown = must(
        "nsenter",
        &[&netns, "ip", "-6", "addr", "show", "dev", "eth0"],
    );
    assert!(shown.contains("2001:db8:1::30/64"), "{shown}");
    let lo = run(
        "nsenter",
        &[&netns, "cat", "/proc/sys/net/ipv6/conf/lo/disable_ipv6"],
    );
    assert_eq!(text(&lo).trim(), "1", "other interfaces stay as they were");
    assert!(
        lab.log("hA").contains("event=ipv6-enabled"),
        "{}",
        lab.log("hA")
    );
    let ping = run(
        "nsenter",
        &[
            &netns,
            "busybox",
            "ping",
            "-6",
            "-c",
            "2",
            "-W",
            "3",
            "2001:db8:1::1",
        ],
    );
    assert!(ping.status.success(), "{}", text(&ping));
    let out = lab.macvlan("hA", &["detach", "--id", "dis6"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// radvd advertising `prefix` on the gateway's LAN port, stopped by pid.
struct Radvd {
    child: std::process::Child,
}

impl Radvd {
    fn start(lab: &Lab, prefix: &str, managed: bool) -> Radvd {
        let gw = lab.ns("gw");
        must(
            "ip",
            &[
                "netns",
                "exec",
                &gw,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.forwarding=1",
            ],
        );
        let dir = lab.dir.path().join("radvd");
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("radvd.conf");
        std::fs::write(
            &conf,
            format!(
                "interface {UPLINK} {{\n  AdvSendAdvert on;\n  MinRtrAdvInterval 3;\n  MaxRtrAdvInterval 4;\n  AdvManagedFlag {};\n  AdvOtherConfigFlag {};\n  prefix {prefix} {{\n    AdvOnLink on;\n    AdvAutonomous {};\n  }};\n}};\n",
                if managed { "on" } else { "off" },
                if managed { "on" } else { "off" },
                if managed { "off" } else { "on" },
            ),
        )
        .unwrap();
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &gw, "radvd", "--nodaemon", "-m", "stderr"])
            .arg("-C")
            .arg(&conf)
            .arg("-p")
            .arg(dir.join("radvd.pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("radvd.log")).unwrap())
            .spawn()
            .expect("radvd (Debian package radvd) installed");
        Radvd { child }
    }
}

impl Drop for Radvd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The EUI-64 interface identifier of `mac` under a /64 `prefix` (RFC 4291 App. A).
fn eui64(prefix: &str, mac: &str) -> String {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    let id = [
        bytes[0] ^ 0x02,
        bytes[1],
        bytes[2],
        0xff,
        0xfe,
        bytes[3],
        bytes[4],
        bytes[5],
    ];
    let base: std::net::Ipv6Addr = prefix.parse().unwrap();
    let mut octets = base.octets();
    octets[8..].copy_from_slice(&id);
    format!("{}/64", std::net::Ipv6Addr::from(octets))
}

#[test]
fn slaac_address_from_the_router_stable_across_restart_and_static_networks_take_nothing() {
    let lab = Lab::new(&["hA"]);
    ipv6_gateway(&lab);
    let _radvd = Radvd::start(&lab, "2001:db8:1::/64", false);
    lab.create_lan("hA", &["--ipv6", "slaac", "--subnet6", "2001:db8:1::/64"]);
    network(
        &lab,
        "hA",
        &[
            "create",
            "fixed",
            "--parent",
            UPLINK,
            "--ipv6",
            "static",
            "--subnet6",
            "2001:db8:2::/64",
            "--gateway6",
            "fe80::1",
        ],
    );
    let auto = lab.id("s1");
    let bundle = lab.bundle("hA", &auto, &["NETWORK=lan"], &[]);
    let started = std::time::Instant::now();
    lab.start("hA", &auto, &bundle).unwrap();
    let took = started.elapsed();
    // The hook returned with the address usable and the router's route.
    let addresses = eth0_addresses(&lab, "hA", &auto);
    let mac = one_mac(&lab, "hA", &auto);
    let expected = eui64("2001:db8:1::", &mac);
    assert_eq!(
        globals6(&addresses),
        std::slice::from_ref(&expected),
        "{addresses:?}"
    );
    // Usable: DAD done, or optimistic while it runs (RFC 4429).
    let own = addresses.iter().find(|(_, l, _)| *l == expected).unwrap();
    assert!(
        !own.2.contains(&"tentative".to_string()) || own.2.contains(&"optimistic".to_string()),
        "{own:?}"
    );
    let route6 = in_container(&lab, "hA", &auto, &["ip", "-6", "route", "show", "default"]);
    assert!(
        route6.contains("via fe80::") && route6.contains("dev eth0"),
        "{route6}"
    );
    assert_eq!(sysctl(&lab, "hA", &auto, "accept_ra"), "2");
    assert!(ping6(&lab, "hA", &auto, "2001:db8:1::1"));
    let records = lab.records("hA");
    assert_eq!(records[0]["ip6"], expected.as_str(), "{records:?}");
    eprintln!("SLAAC attach: {took:?} until the container started");

    // Restart: the same MAC, so the same address.
    lab.stop("hA", &auto);
    let bundle = lab.bundle("hA", &auto, &["NETWORK=lan"], &[]);
    lab.start("hA", &auto, &bundle).unwrap();
    assert_eq!(globals6(&eth0_addresses(&lab, "hA", &auto)), [expected]);

    // A static network on the same LAN takes nothing from the RAs, even
    // after several have been sent.
    let fixed = lab.id("s2");
    let bundle = lab.bundle("hA", &fixed, &["NETWORK=fixed"], &[]);
    lab.start("hA", &fixed, &bundle).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(5));
    let addresses = eth0_addresses(&lab, "hA", &fixed);
    // The gateway is link-local: the first address is free.
    assert_eq!(globals6(&addresses), ["2001:db8:2::1/64"], "{addresses:?}");
    let routes = in_container(&lab, "hA", &fixed, &["ip", "-6", "route", "show"]);
    assert!(!routes.contains("2001:db8:1::"), "{routes}");
    let default = in_container(
        &lab,
        "hA",
        &fixed,
        &["ip", "-6", "route", "show", "default"],
    );
    assert_eq!(default.lines().count(), 1, "{default}");
    assert!(
        default.contains("via fe80::1 dev eth0") && !default.contains("proto ra"),
        "{default}"
    );
}

/// A network whose IPv6 address never comes: the hook fails within the
/// configured wait, naming the cause, and leaves no record and no key.
fn fails_in_bounded_time_leaving_nothing(setting: &str, mode: &str, expected: &str) {
    let lab = Lab::new(&["hA"]);
    let config = lab.config_path("hA");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(setting);
    std::fs::write(&config, text).unwrap();
    lab.create_lan("hA", &["--ipv6", mode]);
    let id = lab.id("nr");
    let bundle = lab.bundle("hA", &id, &["NETWORK=lan"], &[]);
    let started = std::time::Instant::now();
    let error = lab.start("hA", &id, &bundle).unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(error.contains(expected), "{error}");
    assert!(lab.records("hA").is_empty());
    // Nothing left in the host's namespace either (the container's went
    // with it).
    assert_eq!(lab.links("hA").len(), 2, "{:?}", lab.links("hA"));
    assert!(
        !lab.store_keys("hA").iter().any(|k| k.contains("/ipam/")),
        "{:?}",
        lab.store_keys("hA")
    );
}

#[test]
fn slaac_without_a_router_fails_within_the_wait_and_leaves_nothing() {
    fails_in_bounded_time_leaving_nothing(
        "[ipv6]\nslaac_wait = \"2s\"\n",
        "slaac",
        "no IPv6 address from a router advertisement on eth0 within 2s",
    );
}

/// dnsmasq on the gateway serving DHCPv6 from 2001:db8:1::100–::1ff (and
/// sending router advertisements with the M flag, for the default route).
fn dhcpv6_server(lab: &Lab) -> common::dhcp_server::Dnsmasq {
    common::dhcp_server::Dnsmasq::start(
        lab,
        "v6",
        &[
            "--dhcp-range=2001:db8:1::100,2001:db8:1::1ff,64,2m",
            "--enable-ra",
        ],
    )
}

#[test]
fn dhcpv6_lease_renewed_by_the_daemon_released_at_stop_and_kept_across_restarts() {
    let lab = Lab::new(&["hA"]);
    ipv6_gateway(&lab);
    let server = dhcpv6_server(&lab);
    lab.create_lan("hA", &["--ipv6", "dhcpv6", "--subnet6", "2001:db8:1::/64"]);
    let id = lab.id("v6");
    let bundle = lab.bundle("hA", &id, &["NETWORK=lan"], &[]);
    lab.start("hA", &id, &bundle).unwrap();
    let addresses = eth0_addresses(&lab, "hA", &id);
    let globals = globals6(&addresses);
    assert_eq!(
        globals.len(),
        1,
        "one address, from DHCPv6 only: {addresses:?}"
    );
    let leased = globals[0].clone();
    let bare = leased.trim_end_matches("/64").to_string();
    let number = u128::from(bare.parse::<std::net::Ipv6Addr>().unwrap());
    assert!(
        (0x2001_0db8_0001_0000_0000_0000_0000_0100..=0x2001_0db8_0001_0000_0000_0000_0000_01ff)
            .contains(&number),
        "{leased}"
    );
    assert!(addresses
        .iter()
        .any(|(f, l, _)| f == "inet" && l == "192.0.2.64/24"));
    assert_eq!(sysctl(&lab, "hA", &id, "autoconf"), "0");
    // The default route comes from the router's advertisement.
    common::wait_for(
        std::time::Duration::from_secs(10),
        "an IPv6 default route from the RA",
        || {
            in_container(&lab, "hA", &id, &["ip", "-6", "route", "show", "default"])
                .contains("proto ra")
        },
    );
    assert!(ping6(&lab, "hA", &id, "2001:db8:1::1"));
    let record = lab.records("hA").remove(0);
    assert_eq!(record["lease6"]["address"], leased.as_str(), "{record}");
    assert_eq!(record["ip6"], leased.as_str());
    assert!(
        lab.store_keys("hA")
            .iter()
            .any(|k| k.ends_with(&format!("/ipam/lan/{bare}"))),
        "{:?}",
        lab.store_keys("hA")
    );
    common::wait_for(
        std::time::Duration::from_secs(3),
        "dnsmasq records the lease",
        || server.leases().iter().any(|l| l.ip == bare),
    );

    // The daemon renews at T1, and the server sees the renewal.
    lab.renew_now("hA", &id);
    common::wait_for(
        std::time::Duration::from_secs(10),
        "the daemon renews the DHCPv6 lease",
        || lab.log("hA").contains("event=dhcp6-renew") && server.log_text().contains("DHCPRENEW"),
    );
    // A restarted daemon carries on from the store.
    let pid = lab.daemon_pid("hA").expect("the daemon runs");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let out = lab.macvlan("hA", &["gc"]);
    assert!(out.status.success(), "{}", text(&out));
    common::wait_for(
        std::time::Duration::from_secs(5),
        "gc starts a daemon for the lease",
        || lab.daemon_pid("hA").is_some_and(|p| p != pid),
    );
    let renewals = lab.log("hA").matches("event=dhcp6-renew").count();
    lab.renew_now("hA", &id);
    common::wait_for(
        std::time::Duration::from_secs(10),
        "the new daemon renews",
        || lab.log("hA").matches("event=dhcp6-renew").count() > renewals,
    );

    // Stop: the lease goes back to the server; start: the same address.
    lab.stop("hA", &id);
    common::wait_for(
        std::time::Duration::from_secs(5),
        "dnsmasq frees the released lease",
        || {
            server.log_text().contains("DHCPRELEASE")
                && !server.leases().iter().any(|l| l.ip == bare)
        },
    );
    assert!(lab.records("hA")[0].get("lease6").is_none());
    let bundle = lab.bundle("hA", &id, &["NETWORK=lan"], &[]);
    lab.start("hA", &id, &bundle).unwrap();
    assert_eq!(globals6(&eth0_addresses(&lab, "hA", &id)), [leased]);
    lab.stop("hA", &id);
    let out = lab.macvlan("hA", &["detach", "--id", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !lab.store_keys("hA").iter().any(|k| k.contains("/ipam/")),
        "{:?}",
        lab.store_keys("hA")
    );
}

#[test]
fn dhcpv6_without_a_server_fails_within_the_timeout_and_leaves_nothing() {
    fails_in_bounded_time_leaving_nothing(
        "[dhcp]\ntimeout = \"2s\"\n",
        "dhcpv6",
        "get an IPv6 address by DHCPv6 on eth0: no DHCPv6 server answered within",
    );
}

/// `dig +short ARGS` from the gateway's namespace against the responder.
fn dig(lab: &Lab, args: &[&str]) -> String {
    let netns = format!("--net=/run/netns/{}", lab.ns("gw"));
    let mut all = vec![
        netns.as_str(),
        "dig",
        "+short",
        "+time=2",
        "+tries=1",
        "@192.0.2.1",
    ];
    all.extend_from_slice(args);
    let out = run("nsenter", &all);
    assert!(out.status.success(), "dig {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn dns_answers_aaaa_and_ptr_and_health_checks_use_the_endpoints_family() {
    let lab = Lab::new(&["hA"]);
    ipv6_gateway(&lab);
    std::fs::write(lab.rootfs.join("www/index.html"), "six\n").unwrap();
    lab.create_lan(
        "hA",
        &[
            "--subnet6",
            "2001:db8:1::/64",
            "--ip-range6",
            "2001:db8:1::100/120",
        ],
    );
    network(
        &lab,
        "hA",
        &[
            "create",
            "six",
            "--parent",
            UPLINK,
            "--subnet6",
            "2001:db8:2::/64",
        ],
    );
    let web = |id: &str, env: &[&str]| {
        let bundle = lab.bundle("hA", id, env, &[]);
        let mut config = lab.read_config(&bundle);
        config["process"]["args"] =
            serde_json::json!(["sh", "-c", "httpd -p 8000 -h /www; exec sleep 100000"]);
        lab.write_config(&bundle, &config);
        lab.start("hA", id, &bundle).unwrap();
    };
    let dual = lab.id("dual");
    let only6 = lab.id("only6");
    web(
        &dual,
        &["NETWORK=lan", "DISCOVER=true", "PORT=8000", "SERVICE=web"],
    );
    web(
        &only6,
        &["NETWORK=six", "DISCOVER=true", "PORT=8000", "SERVICE=six"],
    );
    // The IPv6-only endpoint is published only if its check connects over IPv6.
    common::wait_for(
        std::time::Duration::from_secs(10),
        "both services up",
        || {
            let six = lab.macvlan("hA", &["lookup", "six"]);
            let web = lab.macvlan("hA", &["lookup", "web"]);
            six.status.success() && web.status.success()
        },
    );
    let six = text(&lab.macvlan("hA", &["lookup", "six"]));
    assert!(six.contains("[2001:db8:2::2]:8000"), "{six}");

    let _responder = lab.spawn_macvlan(
        "gw",
        "hA",
        &["dns", "--listen", "192.0.2.1:53", "--domain", "lab"],
    );
    common::wait_for(
        std::time::Duration::from_secs(10),
        "the responder answers",
        || dig(&lab, &["A", "web.lab"]) == "192.0.2.64",
    );
    assert_eq!(dig(&lab, &["AAAA", "web.lab"]), "2001:db8:1::100");
    assert_eq!(dig(&lab, &["AAAA", "six.lab"]), "2001:db8:2::2");
    // Over TCP too (RFC 7766), several queries on one connection.
    assert_eq!(dig(&lab, &["+tcp", "AAAA", "web.lab"]), "2001:db8:1::100");
    assert_eq!(
        dig(
            &lab,
            &[
                "+tcp",
                "+keepopen",
                "web.lab",
                "A",
                "six.lab",
                "AAAA",
                "web.lab",
                "AAAA"
            ]
        ),
        "192.0.2.64\n2001:db8:2::2\n2001:db8:1::100"
    );
    // An IPv6-only name has no A record: NODATA, not NXDOMAIN.
    assert_eq!(dig(&lab, &["A", "six.lab"]), "");
    let netns = format!("--net=/run/netns/{}", lab.ns("gw"));
    let full = text(&run(
        "nsenter",
        &[
            &netns,
            "dig",
            "+time=2",
            "+tries=1",
            "@192.0.2.1",
            "A",
            "six.lab",
        ],
    ));
    assert!(
        full.contains("status: NOERROR") && full.contains("SOA"),
        "{full}"
    );
    let short = |id: &str| id.chars().take(12).collect::<String>().to_ascii_lowercase();
    assert_eq!(
        dig(&lab, &["-x", "2001:db8:1::100"]),
        format!("{}.web.lab.", short(&dual))
    );
    assert_eq!(
        dig(&lab, &["-x", "192.0.2.64"]),
        format!("{}.web.lab.", short(&dual))
    );
    assert_eq!(
        dig(&lab, &["-x", "2001:db8:2::2"]),
        format!("{}.six.lab.", short(&only6))
    );
    // SRV's additional section carries both families of the target.
    let srv = text(&run(
        "nsenter",
        &[
            &netns,
            "dig",
            "+time=2",
            "+tries=1",
            "@192.0.2.1",
            "SRV",
            "web.lab",
        ],
    ));
    assert!(
        srv.contains("IN\tAAAA\t2001:db8:1::100") && srv.contains("IN\tA\t192.0.2.64"),
        "{srv}"
    );
}
