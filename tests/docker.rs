//! Docker 20.10 (Debian docker.io) with macvlan-runc as a runtime, dockerd
//! running inside a lab host's namespace.

mod common;

use common::docker::{Dockerd, IMAGE};
use common::{text, Lab, GATEWAY, UPLINK};

fn run_flat<'a>(name: &'a str, ip: &'a str, hostif: &'a str) -> Vec<String> {
    [
        "run",
        "-d",
        "--name",
        name,
        "--runtime",
        "macvlan-runc",
        "--net",
        "none",
        "-e",
        "TYPE=flat",
        "-e",
        &format!("HOSTIF={hostif}"),
        "-e",
        &format!("IP={ip}"),
        "-e",
        &format!("GW={GATEWAY}"),
        IMAGE,
        "sleep",
        "100000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn eth0(docker: &Dockerd, name: &str) -> (String, String) {
    common::eth0_inside(name, |args| docker.must(args))
}

#[test]
fn docker_run_restart_stop_start_rm_and_gc() {
    let lab = Lab::new(&["hA"]);
    let docker = Dockerd::start(&lab, "hA");
    // gc asks Docker's own state which containers exist.
    let config = std::fs::read_to_string(lab.config_path("hA")).unwrap();
    std::fs::write(
        lab.config_path("hA"),
        config.replace(
            "container_dirs = [",
            &format!(
                "container_dirs = [\"{}\", ",
                docker.containers_dir().display()
            ),
        ),
    )
    .unwrap();

    let info = docker.must(&["info", "--format", "{{json .Runtimes}}"]);
    assert!(info.contains("macvlan-runc"), "{info}");

    docker.must(&strs(&run_flat("web", "192.0.2.10/24", UPLINK)));
    let (address, mac) = eth0(&docker, "web");
    assert_eq!(address, "192.0.2.10/24");
    let ping = docker.docker(&["exec", "web", "ping", "-c", "2", "-W", "3", GATEWAY]);
    assert!(ping.status.success(), "{}", text(&ping));

    docker.must(&["restart", "-t", "1", "web"]);
    assert_eq!(
        eth0(&docker, "web"),
        (address.clone(), mac.clone()),
        "docker restart"
    );
    docker.must(&["stop", "-t", "1", "web"]);
    let records = lab.records("hA");
    assert_eq!(records[0]["state"], "stopped");

    // A stopped container's address is not given away, and gc keeps it.
    let thief = docker.docker(&strs(&run_flat("thief", "192.0.2.10/24", UPLINK)));
    assert!(!thief.status.success());
    assert!(
        text(&thief).contains("address 192.0.2.10 is held by container"),
        "{}",
        text(&thief)
    );
    let out = lab.macvlan("hA", &["gc"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing to release"), "{}", text(&out));

    docker.must(&["start", "web"]);
    assert_eq!(eth0(&docker, "web"), (address, mac), "docker stop + start");

    // docker rm calls no runtime: gc discovers it.
    docker.must(&["rm", "-f", "web", "thief"]);
    let out = lab.macvlan("hA", &["gc"]);
    assert!(text(&out).contains("released"), "{}", text(&out));
    assert!(lab.records("hA").is_empty(), "{:?}", lab.records("hA"));
    docker.must(&strs(&run_flat("next", "192.0.2.10/24", UPLINK)));
    assert_eq!(eth0(&docker, "next").0, "192.0.2.10/24");

    // `docker run --rm` with one address, again and again: each run finds
    // the previous, removed container's record and releases it (no gc run).
    for round in 0..3 {
        let out = docker.must(&[
            "run",
            "--rm",
            "--runtime",
            "macvlan-runc",
            "--net",
            "none",
            "-e",
            "TYPE=flat",
            "-e",
            &format!("HOSTIF={UPLINK}"),
            "-e",
            "IP=192.0.2.20/24",
            IMAGE,
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
            "eth0",
        ]);
        assert!(out.contains("192.0.2.20/24"), "round {round}: {out}");
    }
}

#[test]
fn docker_plain_containers_and_bad_requests() {
    let lab = Lab::new(&["hA"]);
    let docker = Dockerd::start(&lab, "hA");
    // Asking for nothing: exactly as under runc, only lo.
    let links = docker.must(&[
        "run",
        "--rm",
        "--runtime",
        "macvlan-runc",
        "--net",
        "none",
        IMAGE,
        "ip",
        "-o",
        "link",
    ]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:"), "{links}");

    // A bad request fails `docker run` with our message shown to the user,
    // and leaves nothing behind.
    let out = docker.docker(&strs(&run_flat("bad", "192.0.2.300/24", UPLINK)));
    assert!(!out.status.success());
    let message = text(&out);
    assert!(
        message.contains("invalid IP \"192.0.2.300/24\": expected"),
        "{message}"
    );
    assert!(lab.store_keys("hA").is_empty());
    assert_eq!(lab.links("hA"), ["lo", UPLINK]);
}

/// A DHCP container under Docker: an address from dnsmasq, the same one
/// after `docker restart` and after stop + start, and the lease given back
/// at `docker stop`.
#[test]
fn docker_dhcp_container_keeps_its_lease_across_restarts() {
    let lab = Lab::new(&["hA"]);
    let server = common::dhcp_server::Dnsmasq::start(&lab, "docker", &[]);
    let docker = Dockerd::start(&lab, "hA");
    docker.must(&[
        "run",
        "-d",
        "--name",
        "office",
        "--runtime",
        "macvlan-runc",
        "--net",
        "none",
        "-e",
        "TYPE=dhcp",
        "-e",
        &format!("HOSTIF={UPLINK}"),
        IMAGE,
        "sleep",
        "100000",
    ]);
    let (address, mac) = eth0(&docker, "office");
    let leased = server.wait_lease(&mac);
    assert_eq!(format!("{}/24", leased.ip), address);
    let ping = docker.docker(&["exec", "office", "ping", "-c", "2", "-W", "3", GATEWAY]);
    assert!(ping.status.success(), "{}", text(&ping));

    docker.must(&["restart", "-t", "1", "office"]);
    assert_eq!(eth0(&docker, "office"), (address.clone(), mac.clone()));
    docker.must(&["stop", "-t", "1", "office"]);
    let started = std::time::Instant::now();
    while server.lease_for_mac(&mac).is_some() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "lease not released at docker stop: {:?}",
            server.leases()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    docker.must(&["start", "office"]);
    assert_eq!(eth0(&docker, "office"), (address, mac));
    docker.must(&["rm", "-f", "office"]);
}

/// The README's first example: an operator's network, `-e NETWORK=lan`
/// with no address (the lowest free one of the range), kept across
/// `docker restart`; a container joining it with `--net container:web`
/// changes nothing in web's namespace, not even with RATE.
#[test]
fn docker_network_by_name_and_a_joining_container() {
    let lab = Lab::new(&["hA"]);
    let docker = Dockerd::start(&lab, "hA");
    lab.create_lan("hA", &[]);
    let run_on = |name: &str, net: &str, env: &[&str]| {
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--runtime",
            "macvlan-runc",
            "--net",
            net,
        ];
        for e in env {
            args.extend(["-e", e]);
        }
        args.extend([IMAGE, "sleep", "100000"]);
        docker.must(&args)
    };
    run_on("web", "none", &["NETWORK=lan"]);
    let (address, mac) = eth0(&docker, "web");
    assert_eq!(address, "192.0.2.64/24");
    let ping = docker.docker(&["exec", "web", "ping", "-c", "2", "-W", "3", GATEWAY]);
    assert!(ping.status.success(), "{}", text(&ping));
    docker.must(&["restart", "-t", "1", "web"]);
    assert_eq!(
        eth0(&docker, "web"),
        (address.clone(), mac.clone()),
        "docker restart"
    );

    let pid = docker.must(&["inspect", "-f", "{{.State.Pid}}", "web"]);
    let netns = format!("--net=/proc/{}/ns/net", pid.trim());
    let look = |what: &[&str]| common::must("nsenter", &[&[netns.as_str()], what].concat());
    let links_before = look(&["ip", "-o", "link"]);
    let routes_before = look(&["ip", "route"]);
    run_on("side", "container:web", &["NETWORK=lan", "RATE=1000"]);
    assert_eq!(look(&["ip", "-o", "link"]), links_before);
    assert_eq!(look(&["ip", "route"]), routes_before);
    assert!(!look(&["tc", "qdisc", "show", "dev", "eth0"]).contains("tbf"));
    assert!(lab.log("hA").contains("event=skip"), "{}", lab.log("hA"));
    docker.must(&["rm", "-f", "side"]);
    assert_eq!(look(&["ip", "-o", "link"]), links_before);
    assert_eq!(eth0(&docker, "web"), (address, mac));
    assert_eq!(lab.records("hA").len(), 1, "{:?}", lab.records("hA"));
    docker.must(&["rm", "-f", "web"]);
}

/// A dual-stack network through Docker: both families on eth0 (the IPv6
/// address usable at once), both reach the gateway, and `docker restart`
/// keeps both.
#[test]
fn docker_dual_stack_container_keeps_both_addresses() {
    let lab = Lab::new(&["hA"]);
    lab.add_gateway_ipv6();
    let docker = Dockerd::start(&lab, "hA");
    lab.create_lan(
        "hA",
        &[
            "--subnet6",
            "2001:db8:1::/64",
            "--ip-range6",
            "2001:db8:1::100/120",
            "--gateway6",
            "fe80::1",
        ],
    );
    docker.must(&[
        "run",
        "-d",
        "--name",
        "dual",
        "--runtime",
        "macvlan-runc",
        "--net",
        "none",
        "-e",
        "NETWORK=lan",
        IMAGE,
        "sleep",
        "100000",
    ]);
    let addresses = |docker: &Dockerd| {
        docker.must(&["exec", "dual", "ip", "-o", "addr", "show", "dev", "eth0"])
    };
    let shown = addresses(&docker);
    assert!(shown.contains("inet 192.0.2.64/24"), "{shown}");
    assert!(shown.contains("inet6 2001:db8:1::100/64"), "{shown}");
    let own = shown
        .lines()
        .find(|l| l.contains("2001:db8:1::100"))
        .unwrap_or_default();
    assert!(!own.contains("tentative"), "{shown}");
    for (family, address) in [("-4", GATEWAY), ("-6", "2001:db8:1::1")] {
        let ping = docker.docker(&[
            "exec", "dual", "ping", family, "-c", "2", "-W", "3", address,
        ]);
        assert!(ping.status.success(), "{address}: {}", text(&ping));
    }
    docker.must(&["restart", "-t", "1", "dual"]);
    let again = addresses(&docker);
    assert!(
        again.contains("inet 192.0.2.64/24") && again.contains("inet6 2001:db8:1::100/64"),
        "{again}"
    );
    docker.must(&["rm", "-f", "dual"]);
}
