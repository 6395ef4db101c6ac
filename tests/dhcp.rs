//! DHCP networks against a real server: dnsmasq in the lab gateway's
//! namespace, its lease file read by the tests.

mod common;

use std::time::{Duration, Instant};

use common::dhcp_server::Dnsmasq;
use common::{text, Lab, GATEWAY};

fn dhcp_env() -> Vec<&'static str> {
    vec!["TYPE=dhcp", "HOSTIF=lan0"]
}

/// The MAC the hook gives container `id`.
fn mac_of(id: &str) -> String {
    macvlan_runc::netlink::format_mac(&macvlan_runc::net::stable_mac(id))
}

/// Polls until `done` holds; returns how long it took, or panics after `limit`.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
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

    // dnsmasq's lease file names both, by the stable MACs and client ids.
    let lease_a = server
        .lease_for_mac(&mac_of(&a))
        .expect("lease of a in dnsmasq");
    assert_eq!(format!("{}/24", lease_a.ip), address_a);
    assert_eq!(lease_a.client_id, format!("01:{}", mac_of(&a)));
    assert_eq!(
        format!(
            "{}/24",
            server.lease_for_mac(&mac_of(&b)).expect("lease of b").ip
        ),
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
