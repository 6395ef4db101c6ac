//! Service discovery on the lab: registration by the hook and by
//! `macvlan publish`, the registrar's health checks and TTL, `lookup`, and
//! the DNS responder answering from the store.

mod common;

use std::time::{Duration, Instant};

use common::{as_strs, flat_env, text, wait_for, Lab, DAEMON_IDLE_EXIT_S, DISCOVERY_TTL_S};

/// A container running busybox httpd on `port` (serving the lab rootfs's
/// /www) and then sleeping, so the server can be stopped on its own.
fn web_container(lab: &Lab, host: &str, id: &str, ip: &str, extra_env: &[&str]) {
    let mut env = flat_env(ip);
    env.extend(extra_env.iter().map(|e| e.to_string()));
    lab.start_web(host, id, &as_strs(&env));
}

/// `macvlan lookup NAME` on `host`: the endpoint lines, empty when none.
fn lookup(lab: &Lab, host: &str, name: &str) -> Vec<String> {
    let out = lab.macvlan(host, &["lookup", name]);
    if !out.status.success() {
        let message = text(&out);
        assert!(message.contains("no live endpoints"), "lookup: {message}");
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn ttl() -> Duration {
    Duration::from_secs(DISCOVERY_TTL_S)
}

#[test]
fn a_service_is_published_while_its_port_answers_and_withdrawn_when_the_container_stops() {
    let lab = Lab::new(&["hA"]);
    std::fs::write(lab.rootfs.join("www/index.html"), "hello\n").unwrap();
    let id = lab.id("web");
    web_container(
        &lab,
        "hA",
        &id,
        "192.0.2.20/24",
        &["DISCOVER=true", "PORT=8000", "SERVICE=webapp"],
    );
    // The hook recorded the registration and started the registrar.
    let took = wait_for(Duration::from_secs(10), "webapp published", || {
        !lookup(&lab, "hA", "webapp").is_empty()
    });
    eprintln!("published {took:?} after start");
    assert_eq!(
        lookup(&lab, "hA", "webapp"),
        [format!("192.0.2.20:8000 {id} hA")]
    );
    assert!(lab.daemon_pid("hA").is_some(), "no registrar running");
    assert!(
        lab.log("hA").contains("event=service-up"),
        "{}",
        lab.log("hA")
    );

    // The application stops answering: the endpoint goes within one TTL.
    let out = lab.exec("hA", &id, &["busybox", "killall", "httpd"]);
    assert!(out.status.success(), "killall: {}", text(&out));
    let gone = wait_for(ttl() + Duration::from_secs(2), "endpoint withdrawn", || {
        lookup(&lab, "hA", "webapp").is_empty()
    });
    eprintln!(
        "withdrawn {gone:?} after the server stopped (ttl {:?})",
        ttl()
    );
    assert!(gone <= ttl(), "took {gone:?}, more than the TTL");
    assert!(lab.log("hA").contains("event=service-down"));

    // It answers again: published again.
    let out = lab.exec("hA", &id, &["httpd", "-p", "8000", "-h", "/www"]);
    assert!(out.status.success(), "httpd: {}", text(&out));
    wait_for(ttl() * 2, "endpoint back", || {
        !lookup(&lab, "hA", "webapp").is_empty()
    });

    // The container stops: withdrawn at once, registration and all.
    lab.stop("hA", &id);
    assert!(lookup(&lab, "hA", "webapp").is_empty());
    let keys = lab.store_keys("hA");
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("/service/") || k.contains("/registration/")),
        "{keys:?}"
    );
    // Nothing left to do: the on-demand registrar goes away.
    wait_for(
        Duration::from_secs(DAEMON_IDLE_EXIT_S + DISCOVERY_TTL_S + 5),
        "idle registrar exits",
        || lab.daemon_pid("hA").is_none(),
    );
}

#[test]
fn several_containers_serve_one_name_and_dns_answers_a_and_srv() {
    let lab = Lab::new(&["hA"]);
    std::fs::write(lab.rootfs.join("www/index.html"), "api\n").unwrap();
    let first = lab.id("api1");
    let second = lab.id("api2");
    for (id, ip) in [(&first, "192.0.2.30/24"), (&second, "192.0.2.31/24")] {
        web_container(
            &lab,
            "hA",
            id,
            ip,
            &["DISCOVER=true", "PORT=8000", "SERVICE=api"],
        );
    }
    wait_for(Duration::from_secs(10), "both endpoints", || {
        lookup(&lab, "hA", "api").len() == 2
    });

    // The responder in the gateway's namespace, reading this host's store.
    let _dns = lab.spawn_macvlan(
        "gw",
        "hA",
        &["dns", "--listen", "192.0.2.1:53", "--domain", "lab"],
    );
    let client = lab.id("client");
    let bundle = lab.bundle("hA", &client, &as_strs(&flat_env("192.0.2.40/24")), &[]);
    lab.start("hA", &client, &bundle).unwrap();
    let nslookup = |args: &[&str]| {
        let mut command = vec!["nslookup"];
        command.extend_from_slice(args);
        let out = lab.exec("hA", &client, &command);
        text(&out)
    };
    let mut answer = String::new();
    wait_for(Duration::from_secs(10), "dns answers", || {
        answer = nslookup(&["api.lab", "192.0.2.1"]);
        answer.contains("192.0.2.30") && answer.contains("192.0.2.31")
    });
    let srv = nslookup(&["-type=srv", "api.lab", "192.0.2.1"]);
    assert!(srv.contains("8000"), "SRV answer: {srv}");
    assert!(
        srv.contains(&format!(
            "{}.api.lab",
            first.chars().take(12).collect::<String>()
        )),
        "SRV target: {srv}"
    );
    let missing = nslookup(&["nothing.lab", "192.0.2.1"]);
    assert!(missing.contains("NXDOMAIN"), "unknown name: {missing}");
    let other = nslookup(&["example.org", "192.0.2.1"]);
    assert!(other.contains("REFUSED"), "other zone: {other}");
    // A response (QR=1) sent to the responder gets no answer (two
    // responders must not ping-pong); a query right after still does.
    let pid = lab.pid("hA", &client);
    let replies = std::thread::spawn(move || {
        let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let question = b"\x03api\x03lab\x00\x00\x01\x00\x01";
        let mut answers = Vec::new();
        for flags in [[0x81u8, 0x80], [0x01, 0x00]] {
            let mut packet = vec![0x12, 0x34, flags[0], flags[1], 0, 1, 0, 0, 0, 0, 0, 0];
            packet.extend_from_slice(question);
            socket.send_to(&packet, "192.0.2.1:53").unwrap();
            let mut buffer = [0u8; 512];
            answers.push(socket.recv_from(&mut buffer).is_ok());
        }
        answers
    })
    .join()
    .unwrap();
    assert_eq!(replies, [false, true], "response ignored, query answered");

    // One endpoint stops: DNS follows the store (its snapshot is read
    // every second).
    lab.stop("hA", &first);
    wait_for(Duration::from_secs(3), "the stopped endpoint gone", || {
        let answer = nslookup(&["api.lab", "192.0.2.1"]);
        answer.contains("192.0.2.31") && !answer.contains("192.0.2.30")
    });
}

#[test]
fn publish_and_unpublish_a_running_container() {
    let lab = Lab::new(&["hA"]);
    let id = lab.id("pub");
    web_container(&lab, "hA", &id, "192.0.2.50/24", &[]);
    // Asked nothing at start: no registration, no registrar.
    assert!(lab.daemon_pid("hA").is_none());

    let bad: [(&[&str], &str); 4] = [
        (&["publish", "--port", "0", &id], "invalid --port \"0\""),
        (
            &["publish", "--port", "80", "--service=-x", &id],
            "invalid --service \"-x\"",
        ),
        (
            &["publish", "--port", "80", "no-such-container"],
            "container no-such-container: no network record",
        ),
        (
            &["unpublish", &id],
            &format!("container {id}: no service is registered"),
        ),
    ];
    for (args, expected) in bad {
        let out = lab.macvlan("hA", args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(text(&out).contains(expected), "{args:?}: {}", text(&out));
    }
    assert!(!lab
        .store_keys("hA")
        .iter()
        .any(|k| k.contains("/registration/")));

    // Without --service the container's hostname names it ("runc" in runc's spec).
    let out = lab.macvlan("hA", &["publish", "--port", "8000", &id]);
    assert!(out.status.success(), "publish: {}", text(&out));
    wait_for(Duration::from_secs(10), "published", || {
        lookup(&lab, "hA", "runc") == [format!("192.0.2.50:8000 {id} hA")]
    });
    // Publishing again under another name moves it.
    let out = lab.macvlan(
        "hA",
        &["publish", "--port", "8000", "--service", "web", &id],
    );
    assert!(out.status.success(), "publish: {}", text(&out));
    assert!(lookup(&lab, "hA", "runc").is_empty());
    wait_for(Duration::from_secs(10), "renamed", || {
        !lookup(&lab, "hA", "web").is_empty()
    });

    let out = lab.macvlan("hA", &["unpublish", &id]);
    assert!(out.status.success(), "unpublish: {}", text(&out));
    assert!(lookup(&lab, "hA", "web").is_empty());
    // And the registrar does not bring it back.
    std::thread::sleep(ttl());
    assert!(lookup(&lab, "hA", "web").is_empty());
}

#[test]
fn a_bad_discovery_request_is_refused_with_nothing_left() {
    let lab = Lab::new(&["hA"]);
    let cases: [(&[&str], &str); 3] = [
        (&["DISCOVER=true"], "macvlan.port (PORT): required"),
        (
            &["DISCOVER=true", "PORT=99999"],
            "PORT \\\"99999\\\": expected a TCP port",
        ),
        (
            &["DISCOVER=true", "PORT=80", "SERVICE=no_underscores"],
            "SERVICE \\\"no_underscores\\\": expected a DNS label",
        ),
    ];
    for (i, (extra, expected)) in cases.into_iter().enumerate() {
        let id = lab.id(&format!("bad{i}"));
        let mut env = flat_env("192.0.2.60/24");
        env.extend(extra.iter().map(|e| e.to_string()));
        let bundle = lab.bundle("hA", &id, &as_strs(&env), &[]);
        let error = lab.start("hA", &id, &bundle).unwrap_err();
        assert!(error.contains(expected), "{extra:?}: {error}");
        assert!(error.contains(&id), "names the container: {error}");
        let _ = lab.runc("hA", &["delete", "--force", &id]);
    }
    assert!(
        lab.store_keys("hA").is_empty(),
        "{:?}",
        lab.store_keys("hA")
    );
    assert!(lab.daemon_pid("hA").is_none());
    assert_eq!(lab.links("hA"), ["lo", "lan0"]);
}

#[test]
fn a_registrar_restart_loses_no_registration() {
    let lab = Lab::new(&["hA"]);
    let id = lab.id("keep");
    web_container(
        &lab,
        "hA",
        &id,
        "192.0.2.70/24",
        &["DISCOVER=true", "PORT=8000", "SERVICE=keep"],
    );
    wait_for(Duration::from_secs(10), "published", || {
        !lookup(&lab, "hA", "keep").is_empty()
    });

    // The registrar dies: its lease runs out and the endpoint goes within one TTL.
    let pid = lab.daemon_pid("hA").expect("registrar");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let gone = wait_for(ttl() + Duration::from_secs(2), "lease expiry", || {
        lookup(&lab, "hA", "keep").is_empty()
    });
    eprintln!("endpoint expired {gone:?} after the registrar was killed");

    // A daemon started as systemd would: the registration survived in the store.
    let daemon = lab.spawn_macvlan("hA", "hA", &["daemon"]);
    wait_for(Duration::from_secs(10), "taken over", || {
        !lookup(&lab, "hA", "keep").is_empty()
    });

    // A restart within the TTL: the endpoint never disappears.
    drop(daemon);
    let _next = lab.spawn_macvlan("hA", "hA", &["daemon"]);
    let watch = Instant::now();
    while watch.elapsed() < ttl() * 2 {
        assert!(
            !lookup(&lab, "hA", "keep").is_empty(),
            "endpoint vanished {:?} into the restart",
            watch.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.stop("hA", &id);
}

/// The original system's demo: "webapp" on host A runs httpd on port 8000
/// and is registered; a container on host B fetches its page by name, its
/// resolver pointed at the DNS responder in the lab's gateway namespace.
#[test]
fn webapp_on_host_a_is_fetched_by_name_from_host_b() {
    let lab = Lab::new(&["hA", "hB"]);
    std::fs::write(lab.rootfs.join("www/index.html"), "hello from webapp\n").unwrap();
    let webapp = lab.id("webapp");
    web_container(
        &lab,
        "hA",
        &webapp,
        "192.0.2.80/24",
        &["DISCOVER=true", "PORT=8000", "SERVICE=webapp"],
    );
    let _dns = lab.spawn_macvlan(
        "gw",
        "hA",
        &["dns", "--listen", "192.0.2.1:53", "--domain", "lab"],
    );
    let client = lab.id("client");
    let bundle = lab.bundle("hB", &client, &as_strs(&flat_env("192.0.2.81/24")), &[]);
    let mut config = lab.read_config(&bundle);
    config["root"]["path"] = serde_json::json!(lab.resolving_rootfs("192.0.2.1", "lab"));
    lab.write_config(&bundle, &config);
    lab.start("hB", &client, &bundle).unwrap();

    let mut page = String::new();
    wait_for(Duration::from_secs(15), "wget by name", || {
        let out = lab.exec("hB", &client, &["wget", "-qO-", "http://webapp:8000/"]);
        page = String::from_utf8_lossy(&out.stdout).to_string();
        out.status.success()
    });
    assert_eq!(page, "hello from webapp\n");
}
