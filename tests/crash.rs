//! A crash at any instant (issue 16): the hook, poststop, `detach` and
//! `network rm` are SIGKILLed at each step (`MACVLAN_FAILPOINT=kill:STEP`);
//! then the next start of the same container works with its address, and
//! once the container is gone `macvlan gc` leaves no record, no store key
//! but the networks', no link and no server lease.
#![cfg(feature = "failpoints")]

mod common;

use std::path::Path;

use common::dhcp_server::Dnsmasq;
use common::{text, Lab, UPLINK};
use serde_json::json;

/// Arms (or, with `None`, disarms) a failpoint in the bundle's hook entry
/// for `stage` (createRuntime or poststop).
fn arm(lab: &Lab, bundle: &Path, stage: &str, failpoint: Option<&str>) {
    let mut config = lab.read_config(bundle);
    let entry = &mut config["hooks"][stage][0];
    match failpoint {
        Some(name) => entry["env"] = json!([format!("MACVLAN_FAILPOINT={name}")]),
        None => {
            entry.as_object_mut().unwrap().remove("env");
        }
    }
    lab.write_config(bundle, &config);
}

/// Removes the container whatever its state (a killed poststop makes runc
/// report an error after the container is gone).
fn remove(lab: &Lab, id: &str) {
    let _ = lab.runc("hA", &["delete", "--force", id]);
    let state = lab.runc("hA", &["state", id]);
    assert!(
        !state.status.success(),
        "{id} still exists: {}",
        text(&state)
    );
}

/// `macvlan gc`, then nothing of ours is left but `baseline` keys.
fn gc_leaves_nothing(lab: &Lab, step: &str, baseline: &[String], server: Option<&Dnsmasq>) {
    let out = lab.macvlan("hA", &["gc"]);
    assert!(out.status.success(), "{step}: gc: {}", text(&out));
    assert!(
        lab.records("hA").is_empty(),
        "{step}: {:?}",
        lab.records("hA")
    );
    assert_eq!(lab.store_keys("hA"), baseline, "{step}");
    assert_eq!(lab.links("hA"), ["lo", UPLINK], "{step}");
    if let Some(server) = server {
        // dnsmasq rewrites its lease file when it handles the release.
        let started = std::time::Instant::now();
        while !server.leases().is_empty() && started.elapsed().as_secs() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(server.leases().is_empty(), "{step}: {:?}", server.leases());
    }
}

fn address_of(lab: &Lab, id: &str) -> String {
    let interfaces = lab.container_interfaces("hA", id);
    assert_eq!(interfaces.len(), 1, "{interfaces:?}");
    interfaces[0].2[0].clone()
}

/// One lab host's containers asking for `env`, and what must be left once
/// they are gone: `baseline` store keys, and no lease at `server`.
struct Crashes<'a> {
    lab: &'a Lab,
    env: &'a [&'a str],
    baseline: Vec<String>,
    server: Option<&'a Dnsmasq>,
}

impl Crashes<'_> {
    fn gc_leaves_nothing(&self, step: &str) {
        gc_leaves_nothing(self.lab, step, &self.baseline, self.server);
    }

    /// The createRuntime hook killed at `step`: the next start works and
    /// `check` holds for it; removed, gc leaves nothing. Then killed again
    /// and never restarted: gc alone repairs it.
    fn hook_killed(&self, step: &str, check: impl Fn(&str)) {
        let lab = self.lab;
        let id = lab.id(step);
        let kill = format!("kill:{step}");
        let bundle = lab.bundle("hA", &id, self.env, &[]);
        arm(lab, &bundle, "createRuntime", Some(&kill));
        let error = lab.start("hA", &id, &bundle).unwrap_err();
        assert!(error.contains("killed"), "{step}: {error}");
        arm(lab, &bundle, "createRuntime", None);
        lab.start("hA", &id, &bundle)
            .unwrap_or_else(|e| panic!("{step}: {e}"));
        check(&id);
        remove(lab, &id);
        self.gc_leaves_nothing(step);
        arm(lab, &bundle, "createRuntime", Some(&kill));
        lab.start("hA", &id, &bundle).unwrap_err();
        remove(lab, &id);
        self.gc_leaves_nothing(&format!("{step}, no restart"));
    }

    /// poststop killed at `step`: the next start gets the address it had;
    /// removed, gc leaves nothing. Then killed at stop and never
    /// restarted: gc alone repairs it.
    fn poststop_killed(&self, step: &str) {
        let lab = self.lab;
        let id = lab.id(step);
        let kill = format!("kill:{step}");
        let bundle = lab.bundle("hA", &id, self.env, &[]);
        lab.start("hA", &id, &bundle).unwrap();
        let address = address_of(lab, &id);
        arm(lab, &bundle, "poststop", Some(&kill));
        remove(lab, &id);
        arm(lab, &bundle, "poststop", None);
        lab.start("hA", &id, &bundle)
            .unwrap_or_else(|e| panic!("{step}: {e}"));
        assert_eq!(address_of(lab, &id), address, "{step}");
        remove(lab, &id);
        self.gc_leaves_nothing(step);
        lab.start("hA", &id, &bundle).unwrap();
        arm(lab, &bundle, "poststop", Some(&kill));
        remove(lab, &id);
        self.gc_leaves_nothing(&format!("{step}, no restart"));
    }
}

#[test]
fn a_static_attach_killed_at_any_step_is_repaired() {
    let lab = Lab::new(&["hA"]);
    lab.create_lan("hA", &[]);
    let baseline = lab.store_keys("hA");
    let crashes = Crashes {
        lab: &lab,
        env: &["NETWORK=lan", "IP=192.0.2.70"],
        baseline: baseline.clone(),
        server: None,
    };
    for step in ["after-claim", "after-create", "after-configure"] {
        crashes.hook_killed(step, |id| {
            assert_eq!(address_of(&lab, id), "192.0.2.70/24", "{step}");
            assert!(lab.ping("hA", id, common::GATEWAY), "{step}");
        });
    }
    // poststop killed after marking the record stopped, before the rest.
    crashes.poststop_killed("poststop-marked");

    // `macvlan detach` killed after deleting the link, and after the
    // release: attaching the process again works; gc clears it after.
    for step in ["detach-unlinked", "detach-released"] {
        let process = lab.netns_process("hA");
        let pid = process.pid().to_string();
        let attach = [
            "attach",
            "--pid",
            &pid,
            "--network",
            "lan",
            "--ip",
            "192.0.2.71",
        ];
        let out = lab.macvlan("hA", &attach);
        assert!(out.status.success(), "{step}: {}", text(&out));
        let out = lab.macvlan_env(
            "hA",
            &[("MACVLAN_FAILPOINT", &format!("kill:{step}"))],
            &["detach", "--pid", &pid],
        );
        assert!(!out.status.success(), "{step}: the detach was not killed");
        let out = lab.macvlan("hA", &attach);
        assert!(out.status.success(), "{step}: attach again: {}", text(&out));
        assert!(text(&out).contains("192.0.2.71"), "{step}: {}", text(&out));
        drop(process);
        gc_leaves_nothing(&lab, step, &baseline, None);
    }

    // `network rm` killed between the store and the host-side device of a
    // network with host access (made by its first attachment).
    let out = lab.macvlan(
        "hA",
        &[
            "network",
            "create",
            "side",
            "--parent",
            UPLINK,
            "--subnet",
            "198.51.100.0/24",
            "--host-access",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let process = lab.netns_process("hA");
    let pid = process.pid().to_string();
    let out = lab.macvlan("hA", &["attach", "--pid", &pid, "--network", "side"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = lab.macvlan("hA", &["detach", "--pid", &pid]);
    assert!(out.status.success(), "{}", text(&out));
    drop(process);
    assert!(
        lab.links("hA").iter().any(|l| l == "mvh-side"),
        "{:?}",
        lab.links("hA")
    );
    let out = lab.macvlan_env(
        "hA",
        &[("MACVLAN_FAILPOINT", "kill:network-removed")],
        &["network", "rm", "side"],
    );
    assert!(!out.status.success());
    assert!(
        lab.links("hA").iter().any(|l| l == "mvh-side"),
        "{:?}",
        lab.links("hA")
    );
    let out = lab.macvlan("hA", &["network", "ls"]);
    assert!(!text(&out).contains("side"), "{}", text(&out));
    gc_leaves_nothing(&lab, "network-removed", &baseline, None);
    assert!(
        lab.log("hA").contains("device=mvh-side"),
        "{}",
        lab.log("hA")
    );
}

#[test]
fn a_dhcp_attach_and_stop_killed_at_any_step_are_repaired() {
    let lab = Lab::new(&["hA"]);
    let server = Dnsmasq::start(&lab, "crash", &["--no-ping"]);
    let path = lab.config_path("hA");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{config}[dhcp]\nprobe_wait = \"0s\"\n")).unwrap();
    let crashes = Crashes {
        lab: &lab,
        env: &["TYPE=dhcp", "HOSTIF=lan0"],
        baseline: Vec::new(),
        server: Some(&server),
    };
    // Killed before, during and after the lease: the same client gets its
    // address on the next start; never restarted, the lease the server
    // holds (if it got that far) is found and given back.
    for step in ["after-intent", "after-lease", "start-renewer"] {
        crashes.hook_killed(step, |id| {
            let mac = macvlan_runc::netlink::format_mac(&macvlan_runc::net::stable_mac(id));
            assert_eq!(
                server.lease_for_mac(&mac).map(|l| format!("{}/24", l.ip)),
                Some(address_of(&lab, id)),
                "{step}"
            );
        });
    }
    for step in ["poststop-marked", "after-release"] {
        crashes.poststop_killed(step);
    }
}

/// A daemon that took a hook (issue 17's hand-off) and died mid-way: the
/// start fails saying so, `gc` repairs what it left, and the next start,
/// with no daemon, works alone.
#[test]
fn a_daemon_killed_during_a_handed_over_attach_is_repaired() {
    let lab = Lab::new(&["hA"]);
    lab.create_lan("hA", &[]);
    let baseline = lab.store_keys("hA");
    let config = lab.config_path("hA");
    let daemon = common::Spawned(
        std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.ns("hA")))
            .args([
                common::MACVLAN,
                "--config",
                config.to_str().unwrap(),
                "daemon",
            ])
            .env("MACVLAN_FAILPOINT", "kill:after-create")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let socket = lab.daemon_dir("hA").join("hooks.sock");
    common::wait_for(
        std::time::Duration::from_secs(5),
        "the daemon's socket",
        || socket.exists(),
    );
    let id = lab.id("handed");
    let bundle = lab.bundle("hA", &id, &["NETWORK=lan", "IP=192.0.2.70"], &[]);
    let error = lab.start("hA", &id, &bundle).unwrap_err();
    assert!(
        error.contains(&format!("container {id}: createRuntime"))
            && error.contains("took the hook and ended without an answer"),
        "{error}"
    );
    drop(daemon);
    remove(&lab, &id);
    gc_leaves_nothing(&lab, "daemon killed after-create", &baseline, None);
    lab.start("hA", &id, &bundle).unwrap();
    assert_eq!(address_of(&lab, &id), "192.0.2.70/24");
    lab.stop("hA", &id);
}
