//! podman 4.3 with the hooks.d file: annotations request the network.

mod common;

use common::podman::{Podman, IMAGE};
use common::{text, Lab, GATEWAY, UPLINK};

fn run_flat(name: &str, ip: &str) -> Vec<String> {
    [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "--cap-add",
        "NET_RAW",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=4096:4096",
        "--annotation",
        "macvlan.type=flat",
        "--annotation",
        &format!("macvlan.host-interface={UPLINK}"),
        "--annotation",
        &format!("macvlan.ip={ip}"),
        "--annotation",
        &format!("macvlan.gateway={GATEWAY}"),
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

fn eth0(podman: &Podman, name: &str) -> (String, String) {
    common::eth0_inside(name, |args| podman.must(args))
}

#[test]
fn podman_with_the_hooks_d_file() {
    let lab = Lab::new(&["hA"]);
    let podman = Podman::new(&lab, "hA");
    let config = std::fs::read_to_string(lab.config_path("hA")).unwrap();
    std::fs::write(
        lab.config_path("hA"),
        config.replace(
            "container_dirs = [",
            &format!(
                "container_dirs = [\"{}\", ",
                podman.containers_dir().display()
            ),
        ),
    )
    .unwrap();

    podman.must(&strs(&run_flat("web", "192.0.2.10/24")));
    let first = eth0(&podman, "web");
    assert_eq!(first.0, "192.0.2.10/24");
    let ping = podman.podman(&["exec", "web", "ping", "-c", "2", "-W", "3", GATEWAY]);
    assert!(ping.status.success(), "{}", text(&ping));

    // podman runs poststop itself, with an empty environment: the hook's
    // --config argument is what finds the store.
    podman.must(&["stop", "-t", "0", "web"]);
    assert_eq!(lab.records("hA")[0]["state"], "stopped");
    podman.must(&["start", "web"]);
    assert_eq!(eth0(&podman, "web"), first, "podman stop + start");
    podman.must(&["restart", "-t", "0", "web"]);
    assert_eq!(eth0(&podman, "web"), first, "podman restart");

    // Without the annotation the hook does not even run.
    let links = podman.must(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=4096:4096",
        IMAGE,
        "ip",
        "-o",
        "link",
    ]);
    assert_eq!(links.lines().count(), 1, "{links}");

    // A bad request fails `podman run` with our message.
    let out = podman.podman(&strs(&run_flat("bad", "192.0.2.0/24")));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is the network address of its subnet"),
        "{}",
        text(&out)
    );

    podman.must(&["rm", "--force", "--time", "0", "web"]);
    let _ = podman.podman(&["rm", "--force", "--time", "0", "bad"]);
    let out = lab.macvlan("hA", &["gc"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(lab.records("hA").is_empty(), "{:?}", lab.records("hA"));
}

/// A podman container names a network by annotation (no address: the
/// lowest free one of the range), and a member of a pod — which joins the
/// pod's network namespace — changes nothing there, annotation or not.
#[test]
fn podman_network_by_annotation_and_a_pod_member() {
    let lab = Lab::new(&["hA"]);
    let podman = Podman::new(&lab, "hA");
    lab.create_lan("hA", &[]);
    let limits = [
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=4096:4096",
    ];
    let mut args = vec![
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "none",
        "--cap-add",
        "NET_RAW",
    ];
    args.extend(limits);
    args.extend([
        "--annotation",
        "macvlan.network=lan",
        IMAGE,
        "sleep",
        "100000",
    ]);
    podman.must(&args);
    let first = eth0(&podman, "web");
    assert_eq!(first.0, "192.0.2.64/24");
    let ping = podman.podman(&["exec", "web", "ping", "-c", "2", "-W", "3", GATEWAY]);
    assert!(ping.status.success(), "{}", text(&ping));
    podman.must(&["stop", "-t", "0", "web"]);
    podman.must(&["start", "web"]);
    assert_eq!(eth0(&podman, "web"), first, "podman stop + start");

    // An infra image of our own (no registry here): the busybox rootfs
    // whose entrypoint sleeps, in place of podman's pause.
    let tar = lab.dir.path().join("pause.tar");
    common::must(
        "tar",
        &[
            "-C",
            lab.rootfs.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    );
    podman.must(&[
        "import",
        "--change",
        "ENTRYPOINT [\"/bin/sleep\", \"100000\"]",
        tar.to_str().unwrap(),
        "lab/pause:1",
    ]);
    podman.must(&[
        "pod",
        "create",
        "--name",
        "pod1",
        "--network",
        "none",
        "--infra-image",
        "lab/pause:1",
    ]);
    let mut args = vec!["run", "-d", "--pod", "pod1", "--name", "member"];
    args.extend(limits);
    args.extend([
        "--annotation",
        "macvlan.network=lan",
        "--annotation",
        "macvlan.rate=1000",
        IMAGE,
        "sleep",
        "100000",
    ]);
    podman.must(&args);
    let links = podman.must(&["exec", "member", "ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(lab.log("hA").contains("event=skip"), "{}", lab.log("hA"));
    podman.must(&["rm", "--force", "--time", "0", "member"]);
    assert_eq!(lab.records("hA").len(), 1, "{:?}", lab.records("hA"));
    assert_eq!(eth0(&podman, "web"), first);
    // (podman 4.3 here may time out waiting for the infra's exit file; the
    // lab's teardown removes what is left.)
    let _ = podman.podman(&["pod", "rm", "--force", "--time", "0", "pod1"]);
    podman.must(&["rm", "--force", "--time", "0", "web"]);
}

/// A dual-stack network through podman's hooks.d: both families on eth0,
/// both reach the gateway, and a stop + start keeps both.
#[test]
fn podman_dual_stack_container_keeps_both_addresses() {
    let lab = Lab::new(&["hA"]);
    lab.add_gateway_ipv6();
    let podman = Podman::new(&lab, "hA");
    lab.create_lan(
        "hA",
        &[
            "--subnet6",
            "2001:db8:1::/64",
            "--ip-range6",
            "2001:db8:1::100/120",
        ],
    );
    podman.must(&[
        "run",
        "-d",
        "--name",
        "dual",
        "--network",
        "none",
        "--cap-add",
        "NET_RAW",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=4096:4096",
        "--annotation",
        "macvlan.network=lan",
        "--annotation",
        "macvlan.ip6=2001:db8:1::1ab",
        IMAGE,
        "sleep",
        "100000",
    ]);
    let addresses =
        |podman: &Podman| podman.must(&["exec", "dual", "ip", "-o", "addr", "show", "dev", "eth0"]);
    let shown = addresses(&podman);
    assert!(shown.contains("inet 192.0.2.64/24"), "{shown}");
    assert!(shown.contains("inet6 2001:db8:1::1ab/64"), "{shown}");
    for (family, address) in [("-4", GATEWAY), ("-6", "2001:db8:1::1")] {
        let ping = podman.podman(&[
            "exec", "dual", "ping", family, "-c", "2", "-W", "3", address,
        ]);
        assert!(ping.status.success(), "{address}: {}", text(&ping));
    }
    podman.must(&["stop", "-t", "0", "dual"]);
    podman.must(&["start", "dual"]);
    let again = addresses(&podman);
    assert!(
        again.contains("inet 192.0.2.64/24") && again.contains("inet6 2001:db8:1::1ab/64"),
        "{again}"
    );
    podman.must(&["rm", "--force", "--time", "0", "dual"]);
}
