//! DHCP networks against a real server: dnsmasq in the lab gateway's
//! namespace, its lease file read by the tests.

mod common;

use std::time::{Duration, Instant};

use common::dhcp_server::Dnsmasq;
use common::{text, wait_for, Lab, GATEWAY};

fn dhcp_env() -> Vec<&'static str> {
    vec!["TYPE=dhcp", "HOSTIF=lan0"]
}

/// The MAC the hook gives container `id`.
fn mac_of(id: &str) -> String {
    macvlan_runc::netlink::format_mac(&macvlan_runc::net::stable_mac(id))
}

/// The one IPv4 address of the container's eth0.
fn address_of(lab: &Lab, host: &str, id: &str) -> String {
    let interfaces = lab.container_interfaces(host, id);
    assert_eq!(interfaces.len(), 1, "{interfaces:?}");
    assert_eq!(interfaces[0].2.len(), 1, "{interfaces:?}");
    interfaces[0].2[0].clone()
}

fn in_pool(cidr: &str) -> bool {
    let host: u8 = cidr
        .strip_prefix("192.0.2.")
        .and_then(|rest| rest.strip_suffix("/24"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (100..=150).contains(&host)
}

#[test]
fn leases_on_two_hosts_survive_restart_and_are_released_at_stop() {
    let lab = Lab::new(&["h1", "h2"]);
    let server = Dnsmasq::start(&lab, "a", &[]);
    let a = lab.id("a");
    let b = lab.id("b");
    let bundle_a = lab.bundle("h1", &a, &dhcp_env(), &[]);
    let bundle_b = lab.bundle(
        "h2",
        &b,
        &[],
        &[("macvlan.type", "dhcp"), ("macvlan.host-interface", "lan0")],
    );
    lab.start("h1", &a, &bundle_a).unwrap();
    lab.start("h2", &b, &bundle_b).unwrap();

    let address_a = address_of(&lab, "h1", &a);
    let address_b = address_of(&lab, "h2", &b);
    assert!(
        in_pool(&address_a) && in_pool(&address_b),
        "{address_a} {address_b}"
    );
    assert_ne!(address_a, address_b);
    for (host, id) in [("h1", &a), ("h2", &b)] {
        assert!(
            lab.default_route(host, id)
                .contains(&format!("via {GATEWAY}")),
            "{}",
            lab.default_route(host, id)
        );
        assert!(lab.ping(host, id, GATEWAY), "{id} cannot reach the gateway");
    }
    assert!(lab.ping("h1", &a, address_b.split('/').next().unwrap()));

    // The kernel holds the address for the lease's time (2 minutes), so a
    // container whose lease nobody renews stops using it.
    let addresses = lab.container_addresses("h1", &a);
    let lifetime = addresses
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["addr_info"].as_array().unwrap().iter())
        .find(|i| i["family"] == "inet" && i["local"] != "127.0.0.1")
        .and_then(|i| i["valid_life_time"].as_u64())
        .expect("valid_life_time");
    assert!(
        (100..=120).contains(&lifetime),
        "valid_life_time {lifetime}"
    );

    // dnsmasq's lease file names both, by the stable MACs and client ids.
    let lease_a = server.wait_lease(&mac_of(&a));
    assert_eq!(format!("{}/24", lease_a.ip), address_a);
    assert_eq!(lease_a.client_id, format!("01:{}", mac_of(&a)));
    assert_eq!(
        format!("{}/24", server.wait_lease(&mac_of(&b)).ip),
        address_b
    );

    // The store has the lease with its server and times.
    let record = lab
        .records("h1")
        .into_iter()
        .find(|r| r["id"] == a.as_str())
        .expect("record of a");
    assert_eq!(record["type"], "dhcp", "{record}");
    assert_eq!(record["lease"]["server"], GATEWAY, "{record}");
    assert_eq!(record["lease"]["address"], address_a.as_str(), "{record}");
    assert!(lab.log("h1").contains("type=dhcp"), "{}", lab.log("h1"));
    // The leased address is claimed in the store: a static request for it
    // on the same host is refused, naming the holder, and leaves nothing.
    let ip_a = address_a.split('/').next().unwrap();
    assert!(
        lab.store_keys("h1")
            .contains(&format!("/macvlan/ipam/_adhoc/{ip_a}")),
        "{:?}",
        lab.store_keys("h1")
    );
    let thief = lab.id("thief");
    let env = common::flat_env(&address_a);
    let bundle = lab.bundle("h1", &thief, &common::as_strs(&env), &[]);
    let error = lab.start("h1", &thief, &bundle).unwrap_err();
    assert!(
        error.contains(&format!("address {ip_a} is held by container {a}")),
        "{error}"
    );
    let _ = lab.runc("h1", &["delete", "--force", &thief]);

    // Restart: released at stop, the same address again at start.
    lab.stop("h1", &a);
    wait_for(
        Duration::from_secs(5),
        "a's lease released in dnsmasq",
        || server.lease_for_mac(&mac_of(&a)).is_none(),
    );
    assert!(
        server.log_text().contains("DHCPRELEASE"),
        "{}",
        server.log_text()
    );
    lab.start("h1", &a, &bundle_a).unwrap();
    assert_eq!(address_of(&lab, "h1", &a), address_a);

    lab.stop("h1", &a);
    lab.stop("h2", &b);
    wait_for(Duration::from_secs(5), "every lease released", || {
        server.leases().is_empty()
    });
    let stopped = lab
        .records("h1")
        .into_iter()
        .find(|r| r["id"] == a.as_str())
        .expect("record of a stays for a restart");
    assert_eq!(stopped["state"], "stopped");
    assert!(
        stopped.get("lease").is_none_or(|l| l.is_null()),
        "{stopped}"
    );
    let _ = text;
}

/// Adds `text` to a lab host's configuration file.
fn configure(lab: &Lab, host: &str, text: &str) {
    let path = lab.config_path(host);
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(text);
    std::fs::write(path, config).unwrap();
}

/// dnsmasq's shortest lease is 2 minutes, but it sends the T1 and T2 it is
/// given: with T1 = 3 s the daemon renews every 3 s, which the test sees as
/// the expiry in dnsmasq's lease file moving forward. Killing the daemon
/// and starting a new one loses nothing: it reads the leases from the store.
#[test]
fn daemon_renews_at_t1_and_a_restarted_daemon_carries_on() {
    let lab = Lab::new(&["h1"]);
    let server = Dnsmasq::start(
        &lab,
        "renew",
        &["--dhcp-option=option:T1,3", "--dhcp-option=option:T2,6"],
    );
    let id = lab.id("r");
    let bundle = lab.bundle("h1", &id, &dhcp_env(), &[]);
    lab.start("h1", &id, &bundle).unwrap();
    let address = address_of(&lab, "h1", &id);
    let mac = mac_of(&id);
    let first = server.wait_lease(&mac).expiry;

    // The hook started the daemon; it renews at T1. (The daemon's own log
    // line is the signal: a retransmitted REQUEST during the attach can
    // move dnsmasq's expiry by a second too.)
    let renewals = |lab: &Lab| lab.log("h1").matches("event=dhcp-renew").count();
    wait_for(Duration::from_secs(10), "a renewal by the daemon", || {
        renewals(&lab) > 0
    });
    wait_for(
        Duration::from_secs(2),
        "the renewal moves the expiry",
        || {
            server
                .lease_for_mac(&mac)
                .is_some_and(|l| l.expiry >= first + 2)
        },
    );

    // Kill the daemon outright: no chance to hand anything over.
    let pid = lab.daemon_pid("h1").expect("the hook started a daemon");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for(Duration::from_secs(5), "daemon gone", || {
        lab.daemon_pid("h1").is_none()
    });
    let before_restart = server.wait_lease(&mac).expiry;
    let renewed_before = renewals(&lab);
    // `macvlan gc` (a timer on real hosts) sees leases held with no daemon
    // and starts one, which reads them from the store.
    let out = lab.macvlan("h1", &["gc"]);
    assert!(out.status.success(), "{}", text(&out));
    let renewed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(Duration::from_secs(10), "the new daemon renews", || {
            renewals(&lab) > renewed_before
        });
        wait_for(
            Duration::from_secs(2),
            "its renewal moves the expiry",
            || {
                server
                    .lease_for_mac(&mac)
                    .is_some_and(|l| l.expiry > before_restart)
            },
        )
    }));
    let new_daemon = lab.daemon_pid("h1");
    // The address never changed, in dnsmasq or in the container.
    let now_held = server.lease_for_mac(&mac).map(|l| format!("{}/24", l.ip));
    let still = address_of(&lab, "h1", &id);
    lab.stop("h1", &id);
    renewed.unwrap();
    assert!(
        new_daemon.is_some_and(|p| p != pid),
        "{new_daemon:?} vs {pid}"
    );
    assert_eq!(now_held.as_deref(), Some(address.as_str()));
    assert_eq!(still, address);
}

/// With no server on the LAN the hook gives up at `[dhcp] timeout` with a
/// clear message, and leaves no link, no record and no daemon behind.
#[test]
fn no_server_fails_within_the_timeout_leaving_nothing() {
    let lab = Lab::new(&["h1"]);
    configure(&lab, "h1", "[dhcp]\ntimeout = \"2s\"\n");
    let id = lab.id("n");
    let bundle = lab.bundle("h1", &id, &dhcp_env(), &[]);
    let started = Instant::now();
    let error = lab.start("h1", &id, &bundle).unwrap_err();
    let took = started.elapsed();
    assert!(
        error.contains("no DHCP server answered within 2s"),
        "{error}"
    );
    assert!(
        error.contains(&id) || error.contains("HOSTIF lan0"),
        "{error}"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(
        lab.store_keys("h1").iter().all(|k| !k.contains("/dhcp/")),
        "{:?}",
        lab.store_keys("h1")
    );
    assert!(lab.records("h1").is_empty());
    assert_eq!(
        lab.daemon_pid("h1"),
        None,
        "no renewal process for a failed attach"
    );
    assert_eq!(lab.links("h1"), vec!["lo", "lan0"]);
    let out = lab.runc("h1", &["list", "-q"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&id));
    eprintln!("no server: failed after {took:?}: {error}");
}

/// The server offers an address someone already has (dnsmasq with
/// --no-ping and a reservation for the container on an address another
/// lab host holds): the client's ARP probe finds it, it declines, and
/// takes the next offer from the pool.
#[test]
fn an_address_in_use_is_declined() {
    let lab = Lab::new(&["h1", "h2"]);
    let id = lab.id("d");
    let taken = "192.0.2.120";
    common::must(
        "ip",
        &[
            "-n",
            &lab.ns("h2"),
            "addr",
            "add",
            &format!("{taken}/24"),
            "dev",
            "lan0",
        ],
    );
    let server = Dnsmasq::start(
        &lab,
        "decline",
        &["--no-ping", &format!("--dhcp-host={},{taken}", mac_of(&id))],
    );
    let bundle = lab.bundle("h1", &id, &dhcp_env(), &[]);
    lab.start("h1", &id, &bundle).unwrap();
    let address = address_of(&lab, "h1", &id);
    assert_ne!(address, format!("{taken}/24"));
    assert!(in_pool(&address), "{address}");
    let log = server.log_text();
    assert!(log.contains(&format!("DHCPDECLINE(lan0) {taken}")), "{log}");
    assert!(
        lab.log("h1").contains("event=dhcp-decline") && lab.log("h1").contains(taken),
        "{}",
        lab.log("h1")
    );
    lab.stop("h1", &id);
}

#[test]
fn bad_dhcp_requests_are_refused_naming_the_field() {
    let lab = Lab::new(&["h1"]);
    for (env, expected) in [
        (vec!["TYPE=dhcp"], "HOSTIF"),
        (vec!["TYPE=dhcp", "HOSTIF=lan0", "IP=192.0.2.9/24"], "IP"),
        (vec!["TYPE=dhcp", "HOSTIF=nosuch0"], "no such interface"),
    ] {
        let id = lab.id(&format!("bad{}", env.len()));
        let bundle = lab.bundle("h1", &id, &env, &[]);
        let error = lab.start("h1", &id, &bundle).unwrap_err();
        assert!(error.contains(expected), "{env:?}: {error}");
        assert!(lab.records("h1").is_empty());
        assert_eq!(lab.links("h1"), vec!["lo", "lan0"]);
    }
}

/// A failure after the lease was granted gives the lease back and leaves
/// nothing: no link, no record, no daemon, no lease in dnsmasq.
#[cfg(feature = "failpoints")]
#[test]
fn a_failure_after_the_lease_gives_it_back() {
    let lab = Lab::new(&["h1"]);
    let server = Dnsmasq::start(&lab, "rollback", &[]);
    for failpoint in ["after-lease", "start-renewer"] {
        let id = lab.id(failpoint);
        let bundle = lab.bundle("h1", &id, &dhcp_env(), &[]);
        let mut config = lab.read_config(&bundle);
        config["hooks"]["createRuntime"][0]["env"] =
            serde_json::json!([format!("MACVLAN_FAILPOINT={failpoint}")]);
        lab.write_config(&bundle, &config);
        let error = lab.start("h1", &id, &bundle).unwrap_err();
        assert!(
            error.contains(&format!("failpoint {failpoint} triggered")),
            "{error}"
        );
        assert!(
            server.log_text().contains("DHCPACK(lan0)"),
            "{}",
            server.log_text()
        );
        wait_for(Duration::from_secs(5), "the lease released", || {
            server.lease_for_mac(&mac_of(&id)).is_none()
        });
        assert_eq!(lab.links("h1"), vec!["lo", "lan0"], "{failpoint}");
        assert!(
            lab.store_keys("h1").is_empty(),
            "{failpoint}: {:?}",
            lab.store_keys("h1")
        );
        assert_eq!(lab.daemon_pid("h1"), None, "{failpoint}");
    }
}

/// A process attached with `macvlan attach` that dies without any
/// poststop: the daemon notices its namespace is gone, gives the lease
/// back, and then, with nothing left to do, exits.
#[test]
fn a_vanished_namespace_releases_its_lease_and_the_daemon_goes_away() {
    let lab = Lab::new(&["h1"]);
    let server = Dnsmasq::start(&lab, "vanish", &[]);
    let process = lab.long_netns_process("h1");
    let id = lab.id("v");
    let pid = process.pid().to_string();
    let out = lab.macvlan(
        "h1",
        &[
            "attach",
            "--pid",
            &pid,
            "--id",
            &id,
            "--type",
            "dhcp",
            "--host-interface",
            "lan0",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let lease = server.wait_lease(&mac_of(&id));
    assert!(in_pool(&format!("{}/24", lease.ip)));
    wait_for(
        Duration::from_secs(5),
        "the attach started the daemon",
        || lab.daemon_pid("h1").is_some(),
    );
    drop(process);
    let took = wait_for(Duration::from_secs(10), "the lease released", || {
        server.lease_for_mac(&mac_of(&id)).is_none()
    });
    wait_for(
        Duration::from_secs(common::DAEMON_IDLE_EXIT_S + 6),
        "the idle daemon exits",
        || lab.daemon_pid("h1").is_none(),
    );
    let record = lab
        .records("h1")
        .into_iter()
        .find(|r| r["id"] == id.as_str())
        .expect("record");
    assert_eq!(record["state"], "stopped", "{record}");
    assert!(
        lab.log("h1").contains("event=dhcp-release"),
        "{}",
        lab.log("h1")
    );
    eprintln!("namespace gone: lease released after {took:?}");
}

/// `[dhcp] client = "udhcpc"`: busybox's udhcpc runs in the container's
/// namespace with `macvlan` as its script; the address comes from dnsmasq,
/// the lease lands in the store, and at stop udhcpc is stopped and releases.
#[test]
fn udhcpc_as_the_external_client() {
    let lab = Lab::new(&["h1"]);
    let server = Dnsmasq::start(&lab, "udhcpc", &[]);
    configure(
        &lab,
        "h1",
        "[dhcp]\nclient = \"udhcpc\"\nudhcpc = \"/bin/busybox\"\n",
    );
    let id = lab.id("u");
    let bundle = lab.bundle("h1", &id, &dhcp_env(), &[]);
    lab.start("h1", &id, &bundle).unwrap();
    let address = address_of(&lab, "h1", &id);
    assert!(in_pool(&address), "{address}");
    let lease = server.wait_lease(&mac_of(&id));
    assert_eq!(format!("{}/24", lease.ip), address);
    assert!(
        lab.default_route("h1", &id)
            .contains(&format!("via {GATEWAY}")),
        "{}",
        lab.default_route("h1", &id)
    );
    let record = lab
        .records("h1")
        .into_iter()
        .find(|r| r["id"] == id.as_str())
        .expect("record");
    assert_eq!(record["lease"]["server"], GATEWAY, "{record}");
    let pid = record["client_pid"].as_u64().expect("udhcpc's pid") as i32;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("udhcpc"),
        "{cmdline:?}"
    );
    assert!(lab.ping("h1", &id, GATEWAY));

    lab.stop("h1", &id);
    wait_for(Duration::from_secs(5), "udhcpc's release", || {
        server.lease_for_mac(&mac_of(&id)).is_none()
    });
    // Gone, or a zombie waiting for whoever inherited it to reap it.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    assert!(
        matches!(state, None | Some('Z')),
        "udhcpc still runs: {stat}"
    );
    // Restart: the same address again.
    lab.start("h1", &id, &bundle).unwrap();
    assert_eq!(address_of(&lab, "h1", &id), address);
    lab.stop("h1", &id);
}

/// A DHCP network the operator defined (`--ipam dhcp`), as a container's
/// second network: eth0 static from a network's range, eth1 leased by
/// dnsmasq under the network's pool; one default route (the first
/// network's); both released at stop.
#[test]
fn a_dhcp_network_as_the_second_of_two() {
    let lab = Lab::new(&["h1"]);
    let server = Dnsmasq::start(&lab, "two", &[]);
    lab.create_lan("h1", &[]);
    let out = lab.macvlan(
        "h1",
        &[
            "network", "create", "office", "--parent", "lan0", "--ipam", "dhcp",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let id = lab.id("two");
    let bundle = lab.bundle("h1", &id, &["NETWORKS=lan,office"], &[]);
    lab.start("h1", &id, &bundle).unwrap();
    let interfaces = lab.container_interfaces("h1", &id);
    assert_eq!(interfaces.len(), 2, "{interfaces:?}");
    assert_eq!(interfaces[0].2, ["192.0.2.64/24"]);
    assert!(in_pool(&interfaces[1].2[0]), "{interfaces:?}");
    let lease = server.wait_lease(&mac_of(&format!("{id}/1")));
    assert_eq!(format!("{}/24", lease.ip), interfaces[1].2[0]);
    let routes = lab.default_route("h1", &id);
    assert_eq!(routes.lines().count(), 1, "{routes}");
    assert!(routes.contains("dev eth0"), "{routes}");
    let keys = lab.store_keys("h1");
    assert!(
        keys.contains(&format!("/macvlan/ipam/office/{}", lease.ip)),
        "{keys:?}"
    );
    lab.stop("h1", &id);
    wait_for(Duration::from_secs(5), "lease released", || {
        server.lease_for_mac(&mac_of(&format!("{id}/1"))).is_none()
    });
}

#[test]
fn a_dhcp_dns_network_writes_the_leases_resolvers_and_puts_the_file_back() {
    let lab = Lab::new(&["h1"]);
    let _server = Dnsmasq::start(
        &lab,
        "dns",
        &[
            "--no-ping",
            "--dhcp-option=option:dns-server,192.0.2.53,192.0.2.54",
            "--dhcp-option=option:domain-name,lab.example",
        ],
    );
    let out = lab.macvlan(
        "h1",
        &[
            "network",
            "create",
            "office",
            "--parent",
            "lan0",
            "--ipam",
            "dhcp",
            "--dhcp-dns",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let id = lab.id("dns");
    let bundle = lab.bundle("h1", &id, &["NETWORK=office"], &[]);
    // The engine's own copy, bind-mounted as Docker and podman do.
    let source = bundle.join("resolv.conf");
    std::fs::write(&source, "nameserver 198.51.100.1\n").unwrap();
    let mut config = lab.read_config(&bundle);
    config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "destination": "/etc/resolv.conf",
            "type": "bind",
            "source": source,
            "options": ["rbind", "ro"]
        }));
    lab.write_config(&bundle, &config);
    lab.start("h1", &id, &bundle).unwrap();
    let inside = text(&lab.exec("h1", &id, &["cat", "/etc/resolv.conf"]));
    assert!(
        inside.contains("nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch lab.example\n"),
        "{inside}"
    );
    assert!(!inside.contains("198.51.100.1"), "{inside}");
    lab.stop("h1", &id);
    assert_eq!(
        std::fs::read_to_string(&source).unwrap(),
        "nameserver 198.51.100.1\n"
    );
    // Refused on a static network.
    let out = lab.macvlan(
        "h1",
        &[
            "network",
            "create",
            "fixed",
            "--parent",
            "lan0",
            "--subnet",
            "198.51.100.0/24",
            "--dhcp-dns",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--dhcp-dns needs --ipam dhcp"),
        "{}",
        text(&out)
    );
}
