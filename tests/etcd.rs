//! The etcd store on the lab: a 3-member cluster (Debian's etcd 3.4) in the
//! gateway's namespace, two lab hosts sharing it — addresses unique across
//! hosts, bounded waits when the cluster is unreachable or has no leader,
//! and service discovery across hosts.

mod common;

use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use common::{as_strs, flat_env, text, Lab, UPLINK};

/// The hooks' bound in these tests: an outage must fail a hook within it.
const TIMEOUT_S: u64 = 2;

fn etcd_section() -> String {
    format!("[etcd]\ntimeout = \"{TIMEOUT_S}s\"\n")
}

#[test]
fn flat_addresses_are_unique_across_hosts_sharing_a_cluster() {
    let lab = Lab::new(&["hA", "hB"]);
    let cluster = EtcdCluster::start(&lab, 3, &etcd_section());
    let a = lab.id("a");
    let bundle = lab.bundle("hA", &a, &as_strs(&flat_env("192.0.2.10/24")), &[]);
    lab.start("hA", &a, &bundle).unwrap();

    // Host B asks for the address host A's container holds.
    let b = lab.id("b");
    let bundle = lab.bundle("hB", &b, &as_strs(&flat_env("192.0.2.10/24")), &[]);
    let error = lab.start("hB", &b, &bundle).unwrap_err();
    assert!(
        error.contains(&a) && error.contains("192.0.2.10"),
        "{error}"
    );
    let _ = lab.runc("hB", &["delete", "--force", &b]);

    // Another address works, and both hosts see both records.
    let bundle = lab.bundle("hB", &b, &as_strs(&flat_env("192.0.2.11/24")), &[]);
    lab.start("hB", &b, &bundle).unwrap();
    assert!(lab.ping("hB", &b, "192.0.2.10"));
    for host in ["hA", "hB"] {
        let records = lab.records(host);
        let hosts: Vec<&str> = records
            .iter()
            .map(|r| r["host"].as_str().unwrap())
            .collect();
        assert_eq!(hosts, ["hA", "hB"], "records seen from {host}");
    }
    // The contract's keyspace, readable with etcdctl.
    let keys = cluster.keys("/macvlan/");
    for key in [
        format!("/macvlan/flat/{a}"),
        format!("/macvlan/flat/{b}"),
        "/macvlan/ipam/_adhoc/192.0.2.10".to_string(),
        "/macvlan/ipam/_adhoc/192.0.2.11".to_string(),
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    lab.stop("hA", &a);
    lab.stop("hB", &b);
}

/// `macvlan dns` for zone `lab` on 192.0.2.1:53 in the gateway's
/// namespace, with `host`'s configuration (so it reads the cluster).
fn responder(lab: &Lab, host: &str) -> common::Spawned {
    lab.spawn_macvlan(
        "gw",
        host,
        &["dns", "--listen", "192.0.2.1:53", "--domain", "lab"],
    )
}

#[test]
fn an_unreachable_or_leaderless_cluster_fails_the_hook_within_the_timeout() {
    let lab = Lab::new(&["hA"]);
    let mut cluster = EtcdCluster::start(&lab, 3, &etcd_section());
    let check = |label: &str| {
        let id = lab.id(label);
        let bundle = lab.bundle("hA", &id, &as_strs(&flat_env("192.0.2.20/24")), &[]);
        let started = Instant::now();
        let error = lab.start("hA", &id, &bundle).unwrap_err();
        let took = started.elapsed();
        eprintln!(
            "{label}: refused after {took:?}: {}",
            error.lines().last().unwrap_or_default()
        );
        assert!(error.contains(&id) && error.contains("etcd://"), "{error}");
        // runc, its hook and the bound: well under twice the timeout.
        assert!(
            took < Duration::from_secs(2 * TIMEOUT_S + 2),
            "{label}: {took:?}"
        );
        let _ = lab.runc("hA", &["delete", "--force", &id]);
        assert_eq!(lab.links("hA"), ["lo", UPLINK]);
        error
    };
    // Two of three members gone: no quorum, no leader.
    cluster.kill("n1");
    cluster.kill("n2");
    let error = check("noleader");
    assert!(
        error.contains("leader") || error.contains("no answer within"),
        "{error}"
    );
    // All gone: nothing answers.
    cluster.kill("n3");
    let error = check("unreachable");
    assert!(
        error.contains("no answer within") || error.contains("connect"),
        "{error}"
    );
}

/// The original system's demo across hosts: webapp registered on host A
/// through the shared cluster, fetched by name from a container on host B,
/// through the DNS responder in the gateway's namespace.
#[test]
fn webapp_registered_on_host_a_resolves_and_answers_on_host_b() {
    let lab = Lab::new(&["hA", "hB"]);
    let cluster = EtcdCluster::start(&lab, 3, &etcd_section());
    std::fs::write(lab.rootfs.join("www/index.html"), "hello across hosts\n").unwrap();

    let webapp = lab.id("webapp");
    let mut env = flat_env("192.0.2.30/24");
    env.extend(["DISCOVER=true", "PORT=8000", "SERVICE=webapp"].map(String::from));
    lab.start_web("hA", &webapp, &as_strs(&env));

    // Host B's CLI sees host A's endpoint.
    let started = Instant::now();
    loop {
        let out = lab.macvlan("hB", &["lookup", "webapp"]);
        if out.status.success() {
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                format!("192.0.2.30:8000 {webapp} hA")
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(cluster
        .keys("/macvlan/service/")
        .contains(&format!("/macvlan/service/webapp/{webapp}")));

    // The responder runs with host B's configuration: it reads the cluster.
    let _dns = responder(&lab, "hB");
    let client = lab.id("client");
    let bundle = lab.bundle("hB", &client, &as_strs(&flat_env("192.0.2.31/24")), &[]);
    let mut config = lab.read_config(&bundle);
    config["root"]["path"] = serde_json::json!(lab.resolving_rootfs("192.0.2.1", "lab"));
    lab.write_config(&bundle, &config);
    lab.start("hB", &client, &bundle).unwrap();
    let started = Instant::now();
    let page = loop {
        let out = lab.exec("hB", &client, &["wget", "-qO-", "http://webapp:8000/"]);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(page, "hello across hosts\n");

    // Stopping webapp withdraws it at once, cluster-wide; the responder's
    // snapshot follows within its refresh (1 s).
    lab.stop("hA", &webapp);
    let out = lab.macvlan("hB", &["lookup", "webapp"]);
    assert!(!out.status.success());
    common::wait_for(
        Duration::from_secs(3),
        "NXDOMAIN from the responder",
        || {
            let out = lab.exec("hB", &client, &["nslookup", "webapp.lab", "192.0.2.1"]);
            text(&out).contains("NXDOMAIN")
        },
    );
    lab.stop("hB", &client);
}

/// Two lab hosts allocate 240 addresses from one network (made with
/// `network create`), 16 at a time, and the cluster's leader is killed
/// midway: no address is handed out twice, every allocation that failed
/// says why, and retries get the rest through.
#[test]
fn concurrent_allocations_stay_unique_when_the_leader_dies() {
    let lab = Lab::new(&["hA", "hB"]);
    let mut cluster = EtcdCluster::start(&lab, 3, "[etcd]\ntimeout = \"5s\"\n");
    let out = lab.macvlan(
        "hA",
        &[
            "network",
            "create",
            "pool",
            "--parent",
            UPLINK,
            "--subnet",
            "198.18.0.0/22",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let leader = cluster.leader();
    let mut killed_at = 0;
    // Each allocation is retried (200 ms apart) for up to 5 s, as a
    // runtime would: an election plus the clients' failover away from the
    // dead member took longer than 2 s in two runs of this session.
    let allocations =
        common::etcd::allocate_concurrently(&lab, &["hA", "hB"], "pool", 16, 240, 25, |done| {
            while done.load(std::sync::atomic::Ordering::SeqCst) < 80 {
                std::thread::sleep(Duration::from_millis(20));
            }
            killed_at = done.load(std::sync::atomic::Ordering::SeqCst);
            cluster.kill(&leader);
        });
    eprintln!("killed leader {leader} after {killed_at} allocations");
    assert_eq!(allocations.len(), 240);
    let errors: Vec<&String> = allocations.iter().flat_map(|a| &a.errors).collect();
    eprintln!(
        "{} errors met (then retried), e.g. {:?}",
        errors.len(),
        errors.first()
    );
    for error in &errors {
        // A clear error: which store, what failed, why.
        assert!(
            error.contains("etcd://")
                || error.contains("held by")
                || error.contains("kept changing"),
            "unclear error: {error}"
        );
    }
    let failed: Vec<&str> = allocations
        .iter()
        .filter(|a| a.address.is_none())
        .map(|a| a.container.as_str())
        .collect();
    assert!(failed.is_empty(), "never allocated: {failed:?}");

    // The cluster's view: one key per address, one record per container,
    // and they agree.
    let out = cluster.etcdctl(&["get", "--prefix", "/macvlan/ipam/pool/"]);
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let holders: std::collections::BTreeMap<String, String> = lines
        .chunks(2)
        .map(|pair| {
            let ip = pair[0].rsplit('/').next().unwrap().to_string();
            (ip, pair[1].trim_matches('"').to_string())
        })
        .collect();
    assert_eq!(holders.len(), 240, "address keys");
    let mut addresses = std::collections::BTreeSet::new();
    for allocation in &allocations {
        let ip = allocation.address.unwrap().to_string();
        assert!(addresses.insert(ip.clone()), "{ip} handed out twice");
        assert_eq!(
            holders.get(&ip),
            Some(&allocation.container),
            "holder of {ip}"
        );
    }
}

/// A cluster with authentication: the password comes from a file, works,
/// and a wrong one fails saying so — with no password in any message or log.
#[test]
fn user_and_password_from_a_file_and_never_printed() {
    let lab = Lab::new(&["hA"]);
    let cluster = EtcdCluster::start(&lab, 1, "");
    let secret = "s3cret-Pa55";
    for args in [
        vec!["user", "add", "root", "--new-user-password", secret],
        vec!["user", "grant-role", "root", "root"],
        vec!["auth", "enable"],
    ] {
        let out = cluster.etcdctl(&args);
        assert!(out.status.success(), "etcdctl {args:?}: {}", text(&out));
    }
    let password_file = lab.dir.path().join("etcd-password");
    std::fs::write(&password_file, format!("{secret}\n")).unwrap();
    let config = lab.config_path("hA");
    let base = std::fs::read_to_string(&config).unwrap();
    let with_password = |file: &std::path::Path| {
        std::fs::write(
            &config,
            format!(
                "{base}[etcd]\ntimeout = \"3s\"\nuser = \"root\"\npassword_file = \"{}\"\n",
                file.display()
            ),
        )
        .unwrap();
    };

    with_password(&password_file);
    let id = lab.id("auth");
    let bundle = lab.bundle("hA", &id, &as_strs(&flat_env("192.0.2.40/24")), &[]);
    lab.start("hA", &id, &bundle).unwrap();
    let out = lab.macvlan("hA", &["ls"]);
    assert!(
        out.status.success() && text(&out).contains("192.0.2.40"),
        "{}",
        text(&out)
    );
    lab.stop("hA", &id);

    let wrong = lab.dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    with_password(&wrong);
    let out = lab.macvlan("hA", &["--debug", "ls"]);
    let message = text(&out);
    assert!(!out.status.success(), "{message}");
    assert!(
        message.contains("etcd://") && message.contains("authentication failed"),
        "{message}"
    );
    let id = lab.id("auth2");
    let bundle = lab.bundle("hA", &id, &as_strs(&flat_env("192.0.2.41/24")), &[]);
    let error = lab.start("hA", &id, &bundle).unwrap_err();
    assert!(error.contains("authentication failed"), "{error}");
    let _ = lab.runc("hA", &["delete", "--force", &id]);
    for text in [&message, &error, &lab.log("hA")] {
        assert!(
            !text.contains(secret) && !text.contains("not-the-password"),
            "a password was printed: {text}"
        );
    }
}

/// A cluster that speaks TLS and requires client certificates: the hook
/// works with `[etcd] ca/cert/key`, and without the client certificate it
/// fails with an error naming the store.
#[test]
fn tls_with_client_certificates() {
    let lab = Lab::new(&["hA"]);
    let cluster = EtcdCluster::start_with(&lab, 1, "", true);
    let id = lab.id("tls");
    let bundle = lab.bundle("hA", &id, &as_strs(&flat_env("192.0.2.50/24")), &[]);
    lab.start("hA", &id, &bundle).unwrap();
    assert!(cluster
        .keys("/macvlan/flat/")
        .contains(&format!("/macvlan/flat/{id}")));
    lab.stop("hA", &id);

    // The same cluster without our client certificate.
    let config = lab.config_path("hA");
    let text_before = std::fs::read_to_string(&config).unwrap();
    let without: String = text_before
        .lines()
        .filter(|l| !l.starts_with("cert = ") && !l.starts_with("key = "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, format!("{without}timeout = \"3s\"\n")).unwrap();
    let out = lab.macvlan("hA", &["ls"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("etcd://"), "{}", text(&out));
    eprintln!("without a client certificate: {}", text(&out).trim());
}

/// The schema-0 fixture (written by the release before networks) loaded
/// into the cluster, then opened by both hosts at once: one migrates under
/// the lock, both find every record, and the keyspace is schema 1.
#[test]
fn a_schema_zero_keyspace_is_migrated_once_when_two_hosts_open_it() {
    let lab = Lab::new(&["hA", "hB"]);
    let cluster = EtcdCluster::start(&lab, 3, &etcd_section());
    let fixture = rusqlite::Connection::open(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/schema0.db"
    ))
    .unwrap();
    let mut statement = fixture.prepare("SELECT key, value FROM kv").unwrap();
    let rows: Vec<(String, String)> = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 12);
    for (key, value) in &rows {
        let out = cluster.etcdctl(&["put", key, value]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let outputs: Vec<std::process::Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["hA", "hB"]
            .map(|host| {
                let lab = &lab;
                scope.spawn(move || lab.macvlan(host, &["ls", "--json"]))
            })
            .into_iter()
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outputs {
        assert!(out.status.success(), "{}", text(out));
        let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ids: Vec<&str> = records
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["fa", "fb", "fc", "vc1", "dd"]);
    }
    let out = cluster.etcdctl(&["get", "--print-value-only", "/macvlan/schema"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    let keys = cluster.keys("/macvlan/");
    assert!(
        keys.contains(&"/macvlan/network/test1".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"/macvlan/ipam/test1/198.18.0.2".to_string()),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.starts_with("/macvlan/vlan/")),
        "{keys:?}"
    );
    assert!(
        !keys.contains(&"/macvlan/schema-lock".to_string()),
        "{keys:?}"
    );
    // Exactly one host migrated (and logged what it found).
    let migrated = ["hA", "hB"]
        .iter()
        .filter(|h| lab.log(h).contains("192.0.2.10 was held twice"))
        .count();
    assert_eq!(migrated, 1);
    // The VLAN verbs work on the migrated network.
    let out = lab.macvlan("hB", &["vlan", "inspect", "test1"]);
    assert!(text(&out).contains("\"vc1\""), "{}", text(&out));
}

/// Freezes (SIGSTOP) or thaws (SIGCONT) a member: a store that stops
/// answering without losing anything.
fn freeze(cluster: &EtcdCluster, frozen: bool) {
    let signal = if frozen {
        nix::sys::signal::Signal::SIGSTOP
    } else {
        nix::sys::signal::Signal::SIGCONT
    };
    for member in &cluster.members {
        let pid = member.pid().expect("a running member") as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
    }
}

#[test]
fn dhcp_leases_are_kept_from_memory_through_an_etcd_outage_and_written_back() {
    use common::rogue_dhcp::{Offer, RogueDhcp};
    let lab = Lab::new(&["hA"]);
    let cluster = EtcdCluster::start(
        &lab,
        1,
        &format!(
            "{}[dhcp]\nprobe_wait = \"0s\"\nmin_lease = \"5s\"\n",
            etcd_section()
        ),
    );
    let _server = RogueDhcp::start(
        &lab,
        Offer {
            lease_time: Some(16),
            ..Offer::sound("192.0.2.77")
        },
    );
    let id = lab.id("outage");
    let bundle = lab.bundle("hA", &id, &["TYPE=dhcp", "HOSTIF=lan0"], &[]);
    lab.start("hA", &id, &bundle).unwrap();
    let stored = |cluster: &EtcdCluster| -> u64 {
        let out = cluster.etcdctl(&["get", "--print-value-only", &format!("/macvlan/dhcp/{id}")]);
        let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        record["lease"]["obtained_at"].as_u64().unwrap()
    };
    let first = stored(&cluster);
    common::wait_for(Duration::from_secs(5), "the daemon", || {
        lab.daemon_pid("hA").is_some()
    });
    std::thread::sleep(Duration::from_secs(1));
    // The store stops answering for 24 s: longer than the whole lease. The
    // keeper renews from its own copy at T1 (8 s) and again 8 s later, so
    // the kernel never drops the address.
    freeze(&cluster, true);
    let frozen = Instant::now();
    let mut seen = 0;
    while frozen.elapsed() < Duration::from_secs(24) {
        let interfaces = lab.container_interfaces("hA", &id);
        assert_eq!(
            interfaces[0].2,
            ["192.0.2.77/24"],
            "after {:?}: {}",
            frozen.elapsed(),
            lab.log("hA")
        );
        seen += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    freeze(&cluster, false);
    assert!(seen >= 20);
    let renewals = lab.log("hA").matches("event=dhcp-renew ").count();
    assert!(renewals >= 2, "{}", lab.log("hA"));
    // Back: the newer lease is written to the store.
    common::wait_for(Duration::from_secs(15), "the lease written back", || {
        stored(&cluster) >= first + 16
    });
    lab.stop("hA", &id);
}

/// `dig` from the gateway's namespace against the responder; all output.
fn dig(lab: &Lab, args: &[&str]) -> String {
    let netns = format!("--net=/run/netns/{}", lab.ns("gw"));
    let mut all = vec![netns.as_str(), "dig", "+time=1", "+tries=1", "@192.0.2.1"];
    all.extend_from_slice(args);
    text(&common::run("nsenter", &all))
}

#[test]
fn dns_answers_from_its_snapshot_while_etcd_is_frozen_then_says_servfail() {
    let lab = Lab::new(&["hA"]);
    let cluster = EtcdCluster::start(&lab, 1, &etcd_section());
    std::fs::write(lab.rootfs.join("www/index.html"), "up\n").unwrap();
    let web = lab.id("web");
    let mut env = flat_env("192.0.2.30/24");
    env.extend(["DISCOVER=true", "PORT=8000", "SERVICE=web"].map(String::from));
    lab.start_web("hA", &web, &as_strs(&env));
    let _dns = responder(&lab, "hA");
    common::wait_for(Duration::from_secs(15), "web.lab answered", || {
        dig(&lab, &["web.lab"]).contains("192.0.2.30")
    });
    // etcd stops answering (every request would wait the 2 s timeout):
    // answers keep coming at once from the snapshot…
    freeze(&cluster, true);
    let frozen = Instant::now();
    let mut answered = 0;
    while frozen.elapsed() < Duration::from_secs(3) {
        let asked = Instant::now();
        let reply = dig(&lab, &["web.lab"]);
        assert!(reply.contains("192.0.2.30"), "{reply}");
        assert!(
            asked.elapsed() < Duration::from_millis(900),
            "{:?}",
            asked.elapsed()
        );
        answered += 1;
    }
    // …until the snapshot is older than the answers' TTL (5 s): then
    // SERVFAIL, at once, rather than addresses that may be gone.
    std::thread::sleep(Duration::from_secs(4));
    let asked = Instant::now();
    let reply = dig(&lab, &["web.lab"]);
    assert!(reply.contains("status: SERVFAIL"), "{reply}");
    assert!(asked.elapsed() < Duration::from_millis(900));
    freeze(&cluster, false);
    let thawed = Instant::now();
    while !dig(&lab, &["web.lab"]).contains("192.0.2.30") {
        assert!(
            thawed.elapsed() < Duration::from_secs(10),
            "no answer after the thaw: {}\n{}\n{:?}",
            dig(&lab, &["web.lab"]),
            lab.log("hA"),
            cluster.keys("/macvlan/")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("answered {answered} queries in 3 s with etcd frozen");
    lab.stop("hA", &web);
}
