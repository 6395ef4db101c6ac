//! Hostile input and faults, tried for real (issue 16): offers from a
//! scripted DHCP server with every bad field.

mod common;

use std::time::Duration;

use common::rogue_dhcp::{Offer, RogueDhcp};
use common::{Lab, UPLINK};

/// Appends `[dhcp]` settings to the lab host's config and sets policy lines.
fn configure(lab: &Lab, host: &str, policy: &str, dhcp: &str) {
    let path = lab.config_path(host);
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(
        "allow_adhoc = true\n",
        &format!("allow_adhoc = true\n{policy}"),
    );
    std::fs::write(&path, format!("{text}[dhcp]\n{dhcp}")).unwrap();
}

fn dhcp_bundle(lab: &Lab, id: &str, hostname: &str) -> std::path::PathBuf {
    let bundle = lab.bundle("hA", id, &["TYPE=dhcp", "HOSTIF=lan0"], &[]);
    let mut config = lab.read_config(&bundle);
    config["hostname"] = serde_json::json!(hostname);
    lab.write_config(&bundle, &config);
    bundle
}

#[test]
fn hostile_dhcp_offers_are_refused_by_field_and_leave_nothing() {
    let lab = Lab::new(&["hA"]);
    configure(
        &lab,
        "hA",
        "allowed_subnets = [\"192.0.2.0/24\"]\n",
        "timeout = \"2s\"\nprobe_wait = \"0s\"\nmin_lease = \"5s\"\n",
    );
    lab.add_host_address("hA", "192.0.2.250/24");
    let server = RogueDhcp::start(&lab, Offer::sound("192.0.2.77"));
    let mask = |m: &str| Some(m.parse().unwrap());
    let cases: Vec<(&str, Offer, &str)> = vec![
        (
            "zero",
            Offer {
                router: None,
                ..Offer::sound("0.0.0.0")
            },
            "yiaddr (the leased address): the unspecified address",
        ),
        (
            "bcast",
            Offer {
                router: None,
                ..Offer::sound("255.255.255.255")
            },
            "the limited broadcast address",
        ),
        (
            "loop",
            Offer {
                router: None,
                ..Offer::sound("127.0.0.5")
            },
            "a loopback address",
        ),
        (
            "mcast",
            Offer {
                router: None,
                ..Offer::sound("224.0.0.5")
            },
            "a multicast address",
        ),
        (
            "net",
            Offer::sound("192.0.2.0"),
            "the network address of 192.0.2.0/24",
        ),
        (
            "sbcast",
            Offer::sound("192.0.2.255"),
            "the broadcast address of 192.0.2.0/24",
        ),
        (
            "router",
            Offer::sound("192.0.2.1"),
            "the router's own address",
        ),
        (
            "own",
            Offer::sound("192.0.2.250"),
            "an address of this host on the parent interface",
        ),
        (
            "holes",
            Offer {
                mask: mask("255.0.255.0"),
                ..Offer::sound("192.0.2.78")
            },
            "option 1 (subnet mask): 255.0.255.0 is not contiguous",
        ),
        (
            "p31",
            Offer {
                mask: mask("255.255.255.254"),
                ..Offer::sound("192.0.2.78")
            },
            "option 1 (subnet mask): /31 is outside the accepted prefix lengths /8–/30",
        ),
        (
            "p4",
            Offer {
                mask: mask("240.0.0.0"),
                router: None,
                ..Offer::sound("192.0.2.78")
            },
            "/4 is outside the accepted prefix lengths",
        ),
        (
            "far",
            Offer {
                router: Some("198.51.100.1".parse().unwrap()),
                ..Offer::sound("192.0.2.78")
            },
            "option 3 (router): 198.51.100.1 is not a host of the leased subnet 192.0.2.0/24",
        ),
        (
            "nolease",
            Offer {
                lease_time: None,
                ..Offer::sound("192.0.2.78")
            },
            "option 51 (lease time): missing or zero",
        ),
        (
            "short",
            Offer {
                lease_time: Some(2),
                ..Offer::sound("192.0.2.78")
            },
            "option 51 (lease time): 2 s is shorter than the minimum 5 s",
        ),
        (
            "other",
            Offer {
                router: Some("198.51.100.1".parse().unwrap()),
                ..Offer::sound("198.51.100.7")
            },
            "outside the allowed subnets 192.0.2.0/24",
        ),
    ];
    for (tag, offer, expected) in cases {
        server.set(offer);
        let id = lab.id(tag);
        let bundle = dhcp_bundle(&lab, &id, "rogue-test");
        let error = lab.start("hA", &id, &bundle).unwrap_err();
        assert!(
            error.contains(&format!("container {id}"))
                && error.contains("no acceptable DHCP offer within 2s")
                && error.contains(expected),
            "{tag}: {error}"
        );
        assert_eq!(lab.links("hA"), ["lo", UPLINK], "{tag}");
        assert!(
            lab.store_keys("hA").is_empty(),
            "{tag}: {:?}",
            lab.store_keys("hA")
        );
    }
    // Each failed start is one log line carrying the refusal.
    assert!(
        lab.log("hA")
            .lines()
            .any(|l| l.contains("level=error event=hook")
                && l.contains("option 51 (lease time): missing or zero")),
        "{}",
        lab.log("hA")
    );

    // A sound offer is taken, and the container's hostname went with it.
    server.set(Offer {
        lease_time: Some(30),
        ..Offer::sound("192.0.2.77")
    });
    let id = lab.id("good");
    let bundle = dhcp_bundle(&lab, &id, "rogue-test");
    lab.start("hA", &id, &bundle).unwrap();
    let interfaces = lab.container_interfaces("hA", &id);
    assert_eq!(interfaces[0].2, ["192.0.2.77/24"], "{interfaces:?}");
    assert!(
        server.hostnames().iter().any(|h| h == "rogue-test"),
        "{:?}",
        server.hostnames()
    );

    // Renewals (T1 = 15 s) are heard only from the server that leased: ACKs
    // naming another server identifier are ignored while RENEWING; after T2
    // (26 s) REBINDING accepts any server's ACK that passes the rules
    // (RFC 2131 §4.4.5), and the address never went away.
    server.set(Offer {
        server: "192.0.2.9".parse().unwrap(),
        lease_time: Some(30),
        ..Offer::sound("192.0.2.77")
    });
    let started = std::time::Instant::now();
    while !lab
        .log("hA")
        .lines()
        .any(|l| l.contains("dhcp-renew") && l.contains("state=rebinding"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no renewal in REBINDING: {}",
            lab.log("hA")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = lab.log("hA");
    assert!(
        !log.lines()
            .any(|l| l.contains("dhcp-renew") && l.contains("state=renewing")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("dhcp-renew")
            && l.contains("state=rebinding")
            && l.contains("server=192.0.2.9")),
        "{log}"
    );
    let interfaces = lab.container_interfaces("hA", &id);
    assert_eq!(interfaces[0].2, ["192.0.2.77/24"], "{interfaces:?}");
    lab.stop("hA", &id);
}

/// A web server at 192.0.2.20 registered as "web".
const WEB_ENV: [&str; 7] = [
    "TYPE=flat",
    "HOSTIF=lan0",
    "IP=192.0.2.20/24",
    "GW=192.0.2.1",
    "DISCOVER=true",
    "PORT=8000",
    "SERVICE=web",
];

/// `dig` from the gateway's namespace with source address `from`; the
/// whole output.
fn dig_from(lab: &Lab, from: &str, args: &[&str]) -> String {
    let netns = format!("--net=/run/netns/{}", lab.ns("gw"));
    let mut all = vec![
        netns.as_str(),
        "dig",
        "+time=2",
        "+tries=1",
        "-b",
        from,
        "@192.0.2.1",
    ];
    all.extend_from_slice(args);
    common::text(&common::run("nsenter", &all))
}

/// A query for `name` (type A) as bytes, with id `id`.
fn query_bytes(name: &str, id: u16) -> Vec<u8> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    use std::str::FromStr;
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
    message.to_vec().unwrap()
}

#[test]
fn dns_forwards_only_for_served_clients_and_outlives_a_query_flood() {
    let lab = Lab::new(&["hA"]);
    lab.create_lan("hA", &[]);
    lab.add_host_address("gw", "198.51.100.1/24");
    // The upstream: dnsmasq on port 5353 of the gateway, one name of its own.
    let dir = lab.dir.path().join("upstream");
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("pid");
    let _upstream = lab.spawn(
        "gw",
        "dnsmasq",
        &[
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--port=5353",
            "--listen-address=192.0.2.1",
            "--bind-interfaces",
            "--address=/far.test/203.0.113.9",
            "--user=root",
            "--group=root",
            &format!("--pid-file={}", pid_file.display()),
        ],
    );
    let config = lab.config_path("hA");
    let config = config.to_str().unwrap();
    let start = |extra: &[&str]| {
        let mut args = vec![
            "--config",
            config,
            "dns",
            "--listen",
            "192.0.2.1:53",
            "--domain",
            "lab",
            "--forward",
            "192.0.2.1:5353",
        ];
        args.extend_from_slice(extra);
        let responder = lab.spawn("gw", common::MACVLAN, &args);
        let started = std::time::Instant::now();
        while !dig_from(&lab, "192.0.2.1", &["nothing.lab"]).contains("status: NXDOMAIN") {
            assert!(started.elapsed() < Duration::from_secs(10), "no responder");
            std::thread::sleep(Duration::from_millis(100));
        }
        responder
    };

    // Default: the served networks' subnets (lan: 192.0.2.0/24) may forward.
    let responder = start(&[]);
    let inside = dig_from(&lab, "192.0.2.1", &["far.test"]);
    assert!(
        inside.contains("status: NOERROR") && inside.contains("203.0.113.9"),
        "{inside}"
    );
    let outside = dig_from(&lab, "198.51.100.1", &["far.test"]);
    assert!(
        outside.contains("status: REFUSED") && !outside.contains("203.0.113.9"),
        "{outside}"
    );
    // Names in the zone are answered for everyone; over TCP the same rule.
    let zone = dig_from(&lab, "198.51.100.1", &["nothing.lab"]);
    assert!(zone.contains("status: NXDOMAIN"), "{zone}");
    let tcp = dig_from(&lab, "198.51.100.1", &["+tcp", "far.test"]);
    assert!(tcp.contains("status: REFUSED"), "{tcp}");
    let tcp = dig_from(&lab, "192.0.2.1", &["+tcp", "far.test"]);
    assert!(tcp.contains("203.0.113.9"), "{tcp}");

    // A flood of forwarded queries (bounded: 30,000 datagrams at about
    // 10,000 a second, lab addresses only) while in-zone queries keep being
    // answered (each dig may retry: UDP under a flood loses datagrams in
    // the socket's queue); the thread count stays put.
    let pid = responder.0.id();
    let threads = || -> u32 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let before = threads();
    let netns = format!("/run/netns/{}", lab.ns("gw"));
    let flood = std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = std::net::UdpSocket::bind("192.0.2.1:0").unwrap();
        for i in 0..30_000u32 {
            let name = format!("n{i}.far.test");
            let _ = socket.send_to(&query_bytes(&name, i as u16), "192.0.2.1:53");
            if i % 10 == 9 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let (mut asked, mut answered) = (0, 0);
    let mut most_threads = before;
    while !flood.is_finished() {
        asked += 1;
        let reply = dig_from(&lab, "192.0.2.1", &["+tries=3", "+time=1", "nothing.lab"]);
        if reply.contains("status: NXDOMAIN") {
            answered += 1;
        }
        most_threads = most_threads.max(threads());
    }
    flood.join().unwrap();
    eprintln!("in-zone queries during the flood: {answered} of {asked} answered");
    assert!(
        asked >= 3 && answered * 10 >= asked * 9,
        "{answered} of {asked} answered"
    );
    for _ in 0..5 {
        let after = dig_from(&lab, "192.0.2.1", &["nothing.lab"]);
        assert!(after.contains("status: NXDOMAIN"), "{after}");
    }
    assert_eq!(most_threads, before, "threads grew under the flood");
    drop(responder);

    // A listed prefix replaces the default.
    let _responder = start(&["--forward-clients", "198.51.100.0/24"]);
    let outside = dig_from(&lab, "198.51.100.1", &["far.test"]);
    assert!(outside.contains("203.0.113.9"), "{outside}");
    let inside = dig_from(&lab, "192.0.2.1", &["far.test"]);
    assert!(inside.contains("status: REFUSED"), "{inside}");
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

#[test]
fn files_get_their_modes_and_a_damaged_store_fails_cleanly() {
    let lab = Lab::new(&["hA"]);
    let id = lab.id("modes");
    let bundle = lab.bundle(
        "hA",
        &id,
        &common::as_strs(&{
            let mut env = common::flat_env("192.0.2.10/24");
            env.extend(["DISCOVER=true".into(), "PORT=80".into()]);
            env
        }),
        &[],
    );
    lab.start("hA", &id, &bundle).unwrap();
    let db = lab.dir.path().join("state-hA.db");
    assert_eq!(mode_of(&db), 0o600);
    for suffix in ["-wal", "-shm"] {
        let path = db.with_file_name(format!("state-hA.db{suffix}"));
        assert_eq!(mode_of(&path), 0o600, "{}", path.display());
    }
    assert_eq!(mode_of(&lab.log_path("hA")), 0o640);
    let daemon = lab.daemon_dir("hA");
    assert_eq!(mode_of(&daemon), 0o750);
    assert_eq!(mode_of(&daemon.join("daemon.lock")), 0o600);
    common::wait_for(Duration::from_secs(5), "the daemon's pid file", || {
        daemon.join("daemon.pid").exists()
    });
    assert_eq!(mode_of(&daemon.join("daemon.pid")), 0o640);
    lab.stop("hA", &id);

    // A damaged store: the start fails naming the file and the remedy, with
    // nothing configured; stopping such a container still succeeds.
    let running = lab.id("before");
    let bundle = lab.bundle(
        "hA",
        &running,
        &common::as_strs(&common::flat_env("192.0.2.11/24")),
        &[],
    );
    lab.start("hA", &running, &bundle).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(db.with_file_name(format!("state-hA.db{suffix}")));
    }
    std::fs::write(&db, vec![0x5a; 8192]).unwrap();
    let id = lab.id("damaged");
    let bundle = lab.bundle(
        "hA",
        &id,
        &common::as_strs(&common::flat_env("192.0.2.12/24")),
        &[],
    );
    let error = lab.start("hA", &id, &bundle).unwrap_err();
    assert!(
        error.contains(&format!("container {id}"))
            && error.contains(&format!("sqlite://{}", db.display()))
            && error
                .contains("the state file is damaged: restore it from a backup, or move it aside"),
        "{error}"
    );
    assert_eq!(lab.links("hA"), ["lo", UPLINK]);
    let out = lab.runc("hA", &["delete", "--force", &running]);
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(
        lab.log("hA")
            .lines()
            .any(|l| l.contains("event=poststop") && l.contains("left for macvlan gc")),
        "{}",
        lab.log("hA")
    );
}

/// The capabilities a packaged unit grants, as `setpriv --bounding-set`
/// wants them (`-all,+net_admin,…`).
fn unit_capabilities(unit: &str) -> String {
    let path = format!("{}/packaging/systemd/{unit}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let caps: Vec<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .unwrap_or_else(|| panic!("{unit} has no CapabilityBoundingSet"))
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    format!("-all,{}", caps.join(","))
}

/// `macvlan ARGS` in `node`'s namespace with exactly the capabilities
/// packaged `unit` grants.
fn spawn_as_unit(lab: &Lab, node: &str, unit: &str, args: &[&str]) -> common::Spawned {
    let bounding = format!("--bounding-set={}", unit_capabilities(unit));
    let config = lab.config_path("hA");
    let mut all = vec![
        bounding.as_str(),
        "--inh-caps=-all",
        common::MACVLAN,
        "--config",
        config.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    lab.spawn(node, "setpriv", &all)
}

#[test]
fn the_daemon_and_the_responder_work_with_exactly_their_units_capabilities() {
    let lab = Lab::new(&["hA"]);
    let server = common::dhcp_server::Dnsmasq::start(
        &lab,
        "caps",
        &["--no-ping", "--dhcp-option=option:T1,3"],
    );
    std::fs::write(lab.rootfs.join("www/index.html"), "up\n").unwrap();
    // Started first, so the hooks find it running and start none.
    let _daemon = spawn_as_unit(&lab, "hA", "macvlan-daemon.service", &["daemon"]);
    common::wait_for(Duration::from_secs(5), "the daemon's pid file", || {
        lab.daemon_dir("hA").join("daemon.pid").exists()
    });
    let pid: u32 = std::fs::read_to_string(lab.daemon_dir("hA").join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let bounding_mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(
        bounding_mask, "000001ffffffffff",
        "not restricted: {status}"
    );

    let dhcp = lab.id("dhcp");
    let bundle = lab.bundle("hA", &dhcp, &["TYPE=dhcp", "HOSTIF=lan0"], &[]);
    lab.start("hA", &dhcp, &bundle).unwrap();
    let web = lab.id("web");
    lab.start_web("hA", &web, &WEB_ENV);
    // The keeper renews at T1 (3 s) from inside the container's namespace,
    // and the registrar's check from there publishes the service.
    common::wait_for(Duration::from_secs(15), "a renewal by the daemon", || {
        lab.log("hA").contains("event=dhcp-renew")
    });
    common::wait_for(Duration::from_secs(10), "the service published", || {
        lab.macvlan("hA", &["lookup", "web"]).status.success()
    });
    assert!(!lab.log("hA").contains("level=error"), "{}", lab.log("hA"));
    assert!(!server.leases().is_empty());
    // The daemon did the attaches (issue 17's hand-off) with this set.
    for id in [&dhcp, &web] {
        assert!(
            lab.log("hA").lines().any(|l| l.contains("event=attach ")
                && l.contains(&format!("container={id} "))
                && l.contains(" by=daemon")),
            "{}",
            lab.log("hA")
        );
    }

    // The responder with its unit's one capability answers on port 53.
    let _responder = spawn_as_unit(
        &lab,
        "gw",
        "macvlan-dns.service",
        &["dns", "--listen", "192.0.2.1:53", "--domain", "lab"],
    );
    common::wait_for(
        Duration::from_secs(10),
        "an answer from the responder",
        || dig_from(&lab, "192.0.2.1", &["web.lab"]).contains("192.0.2.20"),
    );
    lab.stop("hA", &web);
    lab.stop("hA", &dhcp);
}

/// Lines of the host's log with `event=NAME`.
fn events(lab: &Lab, name: &str) -> Vec<String> {
    let wanted = format!("event={name} ");
    lab.log("hA")
        .lines()
        .filter(|l| l.contains(&wanted))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_silent_dhcp_server_does_not_stall_the_registrar() {
    let lab = Lab::new(&["hA"]);
    configure(
        &lab,
        "hA",
        "",
        "timeout = \"5s\"\nprobe_wait = \"0s\"\nmin_lease = \"5s\"\n",
    );
    std::fs::write(lab.rootfs.join("www/index.html"), "up\n").unwrap();
    let server = RogueDhcp::start(
        &lab,
        Offer {
            lease_time: Some(6),
            ..Offer::sound("192.0.2.77")
        },
    );
    let dhcp = lab.id("dhcp");
    let bundle = dhcp_bundle(&lab, &dhcp, "quiet");
    lab.start("hA", &dhcp, &bundle).unwrap();
    let web = lab.id("web");
    lab.start_web("hA", &web, &WEB_ENV);
    common::wait_for(Duration::from_secs(10), "the service published", || {
        lab.macvlan("hA", &["lookup", "web"]).status.success()
    });
    // The server goes quiet: renewals (2 s each) go unanswered, the lease
    // ends, and re-acquiring waits the whole 5 s timeout, again and again.
    // The registrar's store lease (TTL 3 s) must be kept all along.
    server.set_silent(true);
    let started = std::time::Instant::now();
    let mut checks = 0;
    while started.elapsed() < Duration::from_secs(16) {
        let out = lab.macvlan("hA", &["lookup", "web"]);
        assert!(
            out.status.success(),
            "the service vanished after {:?}: {}\n{}",
            started.elapsed(),
            common::text(&out),
            lab.log("hA")
        );
        checks += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(checks >= 20, "{checks}");
    // The keeper did struggle meanwhile: the lease ran out.
    assert!(
        !events(&lab, "dhcp-expired").is_empty(),
        "{}",
        lab.log("hA")
    );
    lab.stop("hA", &web);
    lab.stop("hA", &dhcp);
}

#[test]
fn a_wall_clock_step_neither_ends_a_lease_early_nor_postpones_its_renewal() {
    let lab = Lab::new(&["hA"]);
    configure(&lab, "hA", "", "probe_wait = \"0s\"\nmin_lease = \"5s\"\n");
    let _server = RogueDhcp::start(
        &lab,
        Offer {
            lease_time: Some(20),
            ..Offer::sound("192.0.2.77")
        },
    );
    // The daemon (started by the hook) reads its clock's offset from here.
    let shift = lab.dir.path().join("clock-shift");
    std::fs::write(&shift, "0").unwrap();
    let id = lab.id("clock");
    let bundle = dhcp_bundle(&lab, &id, "clock");
    let mut spec = lab.read_config(&bundle);
    spec["hooks"]["createRuntime"][0]["env"] =
        serde_json::json!([format!("MACVLAN_CLOCK_SHIFT_FILE={}", shift.display())]);
    lab.write_config(&bundle, &spec);
    lab.start("hA", &id, &bundle).unwrap();
    let leased = std::time::Instant::now();
    common::wait_for(Duration::from_secs(5), "the daemon", || {
        lab.daemon_pid("hA").is_some()
    });
    std::thread::sleep(Duration::from_secs(2));
    // An hour forward: the lease is not over for the keeper (its time runs
    // on the monotonic clock), and it renews at T1 (10 s), not at once.
    std::fs::write(&shift, "3600").unwrap();
    common::wait_for(Duration::from_secs(15), "the renewal at T1", || {
        !events(&lab, "dhcp-renew").is_empty()
    });
    let at = leased.elapsed();
    assert!(
        at >= Duration::from_secs(9),
        "renewed {at:?} after the lease: the step made it early"
    );
    assert!(events(&lab, "dhcp-expired").is_empty(), "{}", lab.log("hA"));
    // An hour back (from the real time): the next renewal still comes at
    // T1 of the renewed lease, not an hour later; the address never goes.
    std::fs::write(&shift, "-3600").unwrap();
    let renewed = std::time::Instant::now();
    common::wait_for(Duration::from_secs(15), "the second renewal", || {
        events(&lab, "dhcp-renew").len() >= 2
    });
    assert!(renewed.elapsed() <= Duration::from_secs(12));
    std::thread::sleep(Duration::from_secs(3));
    assert!(events(&lab, "dhcp-expired").is_empty(), "{}", lab.log("hA"));
    let interfaces = lab.container_interfaces("hA", &id);
    assert_eq!(interfaces[0].2, ["192.0.2.77/24"], "{interfaces:?}");
    lab.stop("hA", &id);
}

#[test]
fn records_from_an_earlier_boot_are_not_taken_for_running() {
    let lab = Lab::new(&["hA"]);
    let runc_id = lab.id("engine");
    let bundle = lab.bundle(
        "hA",
        &runc_id,
        &common::as_strs(&common::flat_env("192.0.2.10/24")),
        &[],
    );
    lab.start("hA", &runc_id, &bundle).unwrap();
    let process = lab.netns_process("hA");
    let pid = process.pid().to_string();
    let out = lab.macvlan(
        "hA",
        &[
            "attach",
            "--pid",
            &pid,
            "--type",
            "flat",
            "--host-interface",
            UPLINK,
            "--ip",
            "192.0.2.11/24",
        ],
    );
    assert!(out.status.success(), "{}", common::text(&out));
    let this_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    for record in lab.records("hA") {
        assert_eq!(record["boot_id"], this_boot.trim(), "{record}");
    }
    // As after a reboot: the pids and the engine's directory are still
    // there (a reused pid, an engine that keeps its state on disk), but
    // the records were written in another boot.
    let path = lab.dir.path().join("state-hA.db");
    let store = macvlan_runc::store::SqliteStore::open(&path).unwrap();
    let keys = macvlan_runc::store::Keys::new("/macvlan");
    for id in [runc_id.clone(), format!("pid-{pid}")] {
        macvlan_runc::ipam::update_flat(&store, &keys, &id, |r| {
            r.boot_id = Some("00000000-0000-0000-0000-000000000000".into());
            true
        })
        .unwrap()
        .expect("the record");
    }
    let out = lab.macvlan("hA", &["gc"]);
    assert!(out.status.success(), "{}", common::text(&out));
    let records = lab.records("hA");
    // The engine's container is kept, stopped; the process's record goes
    // (its pid may be anyone's now).
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["state"], "stopped", "{records:?}");
    assert!(
        lab.log("hA")
            .contains("running in an earlier boot: marked stopped"),
        "{}",
        lab.log("hA")
    );
    drop(process);
    lab.stop("hA", &runc_id);
}

#[test]
fn sixty_endpoints_fit_udp_with_tc_edns_and_tcp_and_tcp_is_bounded() {
    let lab = Lab::new(&["hA"]);
    // Sixty endpoints of one service, written as the registrar writes them.
    let path = lab.dir.path().join("state-hA.db");
    let store = macvlan_runc::store::SqliteStore::open(&path).unwrap();
    let keys = macvlan_runc::store::Keys::new("/macvlan");
    let ops: Vec<macvlan_runc::store::Op> = (0..60u8)
        .map(|i| {
            let container = format!("{:012x}cafe", u64::from(i) + 0xa000);
            let endpoint = macvlan_runc::discovery::Endpoint {
                ip: Some(std::net::Ipv4Addr::new(198, 18, 1, 10 + i)),
                ip6: None,
                port: 8000,
                container: container.clone(),
                host: "hA".into(),
            };
            macvlan_runc::store::Op::Put(
                keys.service_endpoint("many", &container),
                serde_json::to_string(&endpoint).unwrap(),
            )
        })
        .collect();
    use macvlan_runc::store::Store as _;
    assert!(store.transaction(&[], &ops).unwrap());
    let config = lab.config_path("hA");
    let _responder = lab.spawn(
        "gw",
        common::MACVLAN,
        &[
            "--config",
            config.to_str().unwrap(),
            "dns",
            "--listen",
            "192.0.2.1:53",
            "--domain",
            "lab",
        ],
    );
    common::wait_for(Duration::from_secs(10), "the responder", || {
        dig_from(&lab, "192.0.2.1", &["many.lab"]).contains("198.18.1.10")
    });
    let answers = |reply: &str| reply.lines().filter(|l| l.contains("\tIN\tSRV\t")).count();
    // No EDNS: cut to 512 bytes, TC set.
    let udp = dig_from(
        &lab,
        "192.0.2.1",
        &["+noedns", "+ignore", "SRV", "many.lab"],
    );
    assert!(udp.contains("flags: qr aa tc"), "{udp}");
    assert!(
        udp.contains("MSG SIZE  rcvd: ") && answers(&udp) < 60,
        "{udp}"
    );
    let size: usize = udp
        .split("MSG SIZE  rcvd: ")
        .nth(1)
        .and_then(|r| r.trim().parse().ok())
        .unwrap();
    assert!(size <= 512, "{size}");
    // EDNS with 4096 bytes: all of them, no TC.
    let edns = dig_from(&lab, "192.0.2.1", &["+bufsize=4096", "SRV", "many.lab"]);
    assert_eq!(answers(&edns), 60, "{edns}");
    assert!(!edns.contains(" tc"), "{edns}");
    // TCP: all of them.
    let tcp = dig_from(&lab, "192.0.2.1", &["+tcp", "SRV", "many.lab"]);
    assert_eq!(answers(&tcp), 60, "{tcp}");

    // TCP connections are bounded (8 at once) and idle ones closed after
    // 5 s: with eight idle connections open, a ninth waits its turn.
    let netns = format!("/run/netns/{}", lab.ns("gw"));
    let idle = std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let opened = std::time::Instant::now();
        let mut streams: Vec<std::net::TcpStream> = (0..8)
            .map(|_| std::net::TcpStream::connect("192.0.2.1:53").unwrap())
            .collect();
        // Each is closed by the server when idle: read() returns 0.
        let mut closed_after = Vec::new();
        for stream in &mut streams {
            use std::io::Read;
            stream
                .set_read_timeout(Some(Duration::from_secs(15)))
                .unwrap();
            let mut byte = [0u8; 1];
            assert_eq!(stream.read(&mut byte).unwrap(), 0);
            closed_after.push(opened.elapsed());
        }
        closed_after
    });
    std::thread::sleep(Duration::from_millis(300));
    let asked = std::time::Instant::now();
    let ninth = dig_from(&lab, "192.0.2.1", &["+tcp", "+time=12", "many.lab"]);
    let waited = asked.elapsed();
    assert!(ninth.contains("198.18.1.10"), "{ninth}");
    let closed_after = idle.join().unwrap();
    eprintln!("ninth answered after {waited:?}; idle connections closed after {closed_after:?}");
    assert!(waited >= Duration::from_secs(3), "{waited:?}");
    for closed in closed_after {
        assert!(
            closed >= Duration::from_secs(4) && closed <= Duration::from_secs(8),
            "{closed:?}"
        );
    }
}
