//! Host access (`network create --host-access`) on the lab: the lab host's
//! own namespace reaches its containers and they reach it, through the
//! host-side macvlan and one /32 route per container.

mod common;

use common::{must, run, text, Lab, GATEWAY, UPLINK};

/// The lab host's own address on the LAN (on its uplink, the parent).
const HOST_ADDRESS: &str = "192.0.2.66";

/// Runs `args` in the lab host's own network namespace.
fn on_host(lab: &Lab, host: &str, args: &[&str]) -> std::process::Output {
    let netns = format!("--net=/run/netns/{}", lab.ns(host));
    let mut all = vec![netns.as_str()];
    all.extend_from_slice(args);
    run("nsenter", &all)
}

fn host_routes(lab: &Lab, host: &str) -> Vec<String> {
    must(
        "ip",
        &["-n", &lab.ns(host), "route", "show", "dev", "mvh-lan"],
    )
    .lines()
    .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
    .collect()
}

fn mvh_devices(lab: &Lab, host: &str) -> usize {
    lab.links(host)
        .iter()
        .filter(|l| l.starts_with("mvh-"))
        .count()
}

#[test]
fn the_host_reaches_its_containers_and_they_it() {
    let lab = Lab::new(&["hA", "hB"]);
    lab.add_host_address("hA", &format!("{HOST_ADDRESS}/24"));
    lab.create_lan("hA", &["--exclude", "192.0.2.65", "--host-access"]);
    // hB has its own store here: the same network there.
    lab.create_lan("hB", &["--ip-range", "192.0.2.96/28", "--host-access"]);

    let first = lab.id("first");
    let bundle = lab.bundle("hA", &first, &["NETWORK=lan"], &[]);
    lab.start("hA", &first, &bundle).unwrap();
    assert_eq!(
        lab.container_interfaces("hA", &first)[0].2,
        ["192.0.2.64/24"]
    );
    assert_eq!(host_routes(&lab, "hA"), ["192.0.2.64"]);

    // Host → container: ping and a TCP connect; container → host.
    let out = on_host(
        &lab,
        "hA",
        &["busybox", "ping", "-c", "2", "-W", "2", "192.0.2.64"],
    );
    assert!(out.status.success(), "host to container: {}", text(&out));
    let out = lab.exec("hA", &first, &["httpd", "-p", "8080", "-h", "/www"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = on_host(
        &lab,
        "hA",
        &[
            "timeout",
            "3",
            "bash",
            "-c",
            "exec 3<>/dev/tcp/192.0.2.64/8080",
        ],
    );
    assert!(out.status.success(), "TCP from the host: {}", text(&out));
    assert!(lab.ping("hA", &first, HOST_ADDRESS), "container to host");

    // Other containers, on this host and another, still reach each other
    // and the gateway.
    let second = lab.id("second");
    let bundle = lab.bundle("hA", &second, &["NETWORK=lan"], &[]);
    lab.start("hA", &second, &bundle).unwrap();
    let remote = lab.id("remote");
    let bundle = lab.bundle("hB", &remote, &["NETWORK=lan"], &[]);
    lab.start("hB", &remote, &bundle).unwrap();
    assert_eq!(
        lab.container_interfaces("hB", &remote)[0].2,
        ["192.0.2.96/24"]
    );
    for (host, id, peer) in [
        ("hA", &second, "192.0.2.96"),
        ("hB", &remote, "192.0.2.64"),
        ("hA", &first, GATEWAY),
        ("hB", &remote, GATEWAY),
    ] {
        assert!(lab.ping(host, id, peer), "{id} to {peer}");
    }
    let inspect: serde_json::Value =
        serde_json::from_slice(&lab.macvlan("hA", &["network", "inspect", "lan"]).stdout).unwrap();
    assert_eq!(inspect["host_device"]["device"], "mvh-lan", "{inspect}");
    assert_eq!(
        inspect["host_device"]["routes"],
        serde_json::json!(["192.0.2.64", "192.0.2.67"]),
        "{inspect}"
    );

    // doctor finds the routes in place, then misses one removed by hand.
    let out = lab.macvlan("hA", &["doctor"]);
    assert!(
        text(&out).contains("ok       host access"),
        "{}",
        text(&out)
    );
    must(
        "ip",
        &[
            "-n",
            &lab.ns("hA"),
            "route",
            "del",
            "192.0.2.67/32",
            "dev",
            "mvh-lan",
        ],
    );
    let out = lab.macvlan("hA", &["doctor"]);
    assert!(
        text(&out).contains(&format!(
            "no route to {second}'s 192.0.2.67 through mvh-lan"
        )),
        "{}",
        text(&out)
    );
    must(
        "ip",
        &[
            "-n",
            &lab.ns("hA"),
            "route",
            "add",
            "192.0.2.67/32",
            "dev",
            "mvh-lan",
        ],
    );

    // Stop removes the route; a restart brings it back.
    lab.stop("hA", &first);
    assert_eq!(host_routes(&lab, "hA"), ["192.0.2.67"]);
    lab.start(
        "hA",
        &first,
        &lab.bundle("hA", &first, &["NETWORK=lan"], &[]),
    )
    .unwrap();
    assert_eq!(host_routes(&lab, "hA"), ["192.0.2.64", "192.0.2.67"]);

    // A container that vanished without poststop: gc removes its route.
    let out = lab.runc("hA", &["kill", &second, "KILL"]);
    assert!(out.status.success(), "{}", text(&out));
    common::wait_for(std::time::Duration::from_secs(5), "second dies", || {
        lab.runc("hA", &["state", &second])
            .stdout
            .windows(7)
            .any(|w| w == b"stopped")
    });
    std::fs::remove_dir_all(lab.runc_root().join(&second)).unwrap();
    let out = lab.macvlan("hA", &["gc"]);
    assert!(
        text(&out).contains(&format!("released {second}")),
        "{}",
        text(&out)
    );
    assert_eq!(host_routes(&lab, "hA"), ["192.0.2.64"]);

    // Removing the network removes the device.
    lab.stop("hA", &first);
    lab.stop("hB", &remote);
    let out = lab.macvlan("hA", &["gc"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = lab.macvlan("hA", &["network", "rm", "lan"]);
    assert!(text(&out).contains("mvh-lan removed"), "{}", text(&out));
    assert_eq!(mvh_devices(&lab, "hA"), 0);
    assert_eq!(lab.links("hA"), ["lo", UPLINK]);
}

#[test]
fn sixteen_containers_at_once_share_one_host_device() {
    let lab = Lab::new(&["hA"]);
    lab.create_lan("hA", &["--ip-range", "192.0.2.64/27", "--host-access"]);
    let ids: Vec<String> = (0..16).map(|i| lab.id(&format!("p{i}"))).collect();
    lab.start_at_once("hA", &ids, &["NETWORK=lan"]);
    assert_eq!(mvh_devices(&lab, "hA"), 1, "{:?}", lab.links("hA"));
    let mut routes = host_routes(&lab, "hA");
    routes.sort();
    routes.dedup();
    assert_eq!(routes.len(), 16, "{routes:?}");
    for id in &ids {
        lab.stop("hA", id);
    }
    assert!(host_routes(&lab, "hA").is_empty());
    assert_eq!(
        mvh_devices(&lab, "hA"),
        1,
        "the device stays until the network goes"
    );
}

#[test]
fn host_access_needs_bridge_mode_and_static_addresses() {
    let lab = Lab::new(&["hA"]);
    for (extra, expected) in [
        (
            &["--mode", "private"][..],
            "--host-access needs --mode bridge",
        ),
        (
            &["--ipam", "dhcp"][..],
            "--host-access works with --ipam static only",
        ),
    ] {
        let mut args = vec![
            "network",
            "create",
            "x",
            "--parent",
            UPLINK,
            "--host-access",
        ];
        if !extra.contains(&"dhcp") {
            args.extend(["--subnet", "192.0.2.0/24"]);
        }
        args.extend_from_slice(extra);
        let out = lab.macvlan("hA", &args);
        assert!(!out.status.success());
        assert!(text(&out).contains(expected), "{}", text(&out));
    }
}

/// With host access the registrar health-checks a service from the host's
/// own namespace, without entering the container's.
#[test]
fn the_registrar_checks_a_reachable_service_from_the_host() {
    let lab = Lab::new(&["hA"]);
    lab.add_host_address("hA", &format!("{HOST_ADDRESS}/24"));
    lab.create_lan("hA", &["--host-access"]);
    let id = lab.id("web");
    let env = ["NETWORK=lan", "DISCOVER=true", "PORT=8080", "SERVICE=web"];
    let bundle = lab.bundle("hA", &id, &env, &[]);
    lab.start("hA", &id, &bundle).unwrap();
    let out = lab.exec("hA", &id, &["httpd", "-p", "8080", "-h", "/www"]);
    assert!(out.status.success(), "{}", text(&out));
    common::wait_for(std::time::Duration::from_secs(10), "service up", || {
        lab.log("hA")
            .lines()
            .any(|l| l.contains("event=service-up") && l.contains("checked_from=host"))
    });
    let out = lab.macvlan("hA", &["lookup", "web"]);
    assert!(text(&out).contains("192.0.2.64:8080"), "{}", text(&out));
    lab.stop("hA", &id);
}

/// `--host-address`: the host-side device holds the network's host
/// address, which no container can take; the host needs no address of its
/// own on the parent then.
#[test]
fn a_host_address_of_the_network_on_a_host_without_one() {
    let lab = Lab::new(&["hA"]);
    lab.create_lan("hA", &["--host-access", "--host-address", "192.0.2.70"]);
    let id = lab.id("c");
    let bundle = lab.bundle("hA", &id, &["NETWORK=lan"], &[]);
    lab.start("hA", &id, &bundle).unwrap();
    let device = must(
        "ip",
        &["-n", &lab.ns("hA"), "addr", "show", "dev", "mvh-lan"],
    );
    assert!(device.contains("inet 192.0.2.70/32"), "{device}");
    let out = on_host(
        &lab,
        "hA",
        &["busybox", "ping", "-c", "2", "-W", "2", "192.0.2.64"],
    );
    assert!(out.status.success(), "host to container: {}", text(&out));
    assert!(
        lab.ping("hA", &id, "192.0.2.70"),
        "container to the host address"
    );
    let taker = lab.id("taker");
    let bundle = lab.bundle("hA", &taker, &["NETWORK=lan", "IP=192.0.2.70"], &[]);
    let error = lab.start("hA", &taker, &bundle).expect_err("refused");
    assert!(
        error.contains("the host-side address (--host-address)"),
        "{error}"
    );
    let _ = lab.runc("hA", &["delete", "--force", &taker]);
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
            "--host-address",
            "203.0.113.9",
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("--host-access"), "{}", text(&out));
    lab.stop("hA", &id);
}
