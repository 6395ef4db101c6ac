//! The CNI face, invoked as a runtime invokes a plugin — the command in the
//! environment, the configuration on stdin — with a network namespace per
//! "pod" on the lab: every verb, each spec version's result shape, error
//! codes, DEL's idempotence, GC against the valid attachments, STATUS.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{must, run, text, Lab, MACVLAN, UPLINK};
use serde_json::{json, Value};

/// A named network namespace standing in for a pod, deleted on drop.
struct Pod {
    name: String,
}

impl Pod {
    fn new(lab: &Lab, tag: &str) -> Pod {
        let name = format!("{}-{tag}", lab.name);
        must("ip", &["netns", "add", &name]);
        // As a runtime's loopback plugin would (a pod reaches its own
        // addresses through lo).
        must("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Pod { name }
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        must("ip", &all)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// What the plugin printed and how it exited.
struct Outcome {
    code: i32,
    output: Value,
    raw: String,
}

/// Runs the plugin in `host`'s namespace with `command`, container id,
/// netns, ifname and stdin `config`, as libcni does.
fn plugin(
    lab: &Lab,
    host: &str,
    command: &str,
    (container, netns, ifname): (&str, &str, &str),
    config: &Value,
) -> Outcome {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.ns(host)))
        .arg(MACVLAN)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let raw = String::from_utf8_lossy(&out.stdout).to_string();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        output: serde_json::from_str(raw.trim()).unwrap_or(Value::Null),
        raw: format!("{raw}{}", String::from_utf8_lossy(&out.stderr)),
    }
}

fn conf(lab: &Lab, host: &str, version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "lan-cni",
        "type": "macvlan-runc",
        "network": "lan",
        "config": lab.config_path(host),
    })
}

/// The lab's LAN with an IPv6 side, as the CNI network.
fn dual_lan(lab: &Lab, host: &str) {
    lab.add_gateway_ipv6();
    lab.create_lan(
        host,
        &[
            "--subnet6",
            "2001:db8:1::/64",
            "--ip-range6",
            "2001:db8:1::100/120",
            "--gateway6",
            "fe80::1",
        ],
    );
}

#[test]
fn add_check_del_in_every_supported_version() {
    let lab = Lab::new(&["hA"]);
    dual_lan(&lab, "hA");
    let version = plugin(
        &lab,
        "hA",
        "VERSION",
        ("", "", ""),
        &json!({"cniVersion": "1.1.0"}),
    );
    assert_eq!(version.code, 0, "{}", version.raw);
    assert_eq!(
        version.output["supportedVersions"],
        json!(["0.4.0", "1.0.0", "1.1.0"])
    );
    for (n, v) in ["0.4.0", "1.0.0", "1.1.0"].into_iter().enumerate() {
        let pod = Pod::new(&lab, &format!("p{n}"));
        let container = format!("ctr{n}");
        let add = plugin(
            &lab,
            "hA",
            "ADD",
            (&container, &pod.path(), "eth0"),
            &conf(&lab, "hA", v),
        );
        assert_eq!(add.code, 0, "{v}: {}", add.raw);
        let result = &add.output;
        assert_eq!(result["cniVersion"], v);
        assert_eq!(result["interfaces"][0]["name"], "eth0");
        assert_eq!(result["interfaces"][0]["sandbox"], pod.path());
        // Each DEL frees the address: every version gets the lowest again.
        let expected4 = "192.0.2.64/24".to_string();
        assert_eq!(result["ips"][0]["address"], expected4.as_str(), "{result}");
        assert_eq!(result["ips"][0]["gateway"], "192.0.2.1");
        assert_eq!(result["ips"][0]["interface"], 0);
        assert_eq!(result["ips"][1]["address"], "2001:db8:1::100/64");
        // 0.4.0 numbers each IP's version; 1.x does not.
        assert_eq!(
            result["ips"][0].get("version").is_some(),
            v == "0.4.0",
            "{result}"
        );
        assert!(result["routes"]
            .as_array()
            .unwrap()
            .contains(&json!({"dst": "0.0.0.0/0", "gw": "192.0.2.1"})));
        // The interface is there, with the result's MAC and addresses.
        let shown = pod.ip(&["-o", "addr", "show", "dev", "eth0"]);
        assert!(shown.contains(&expected4), "{shown}");
        let mac = result["interfaces"][0]["mac"].as_str().unwrap().to_string();
        assert!(pod.ip(&["link", "show", "eth0"]).contains(&mac));
        assert!(pod
            .ip(&["route", "show", "default"])
            .contains("via 192.0.2.1 dev eth0"));

        let check = plugin(
            &lab,
            "hA",
            "CHECK",
            (&container, &pod.path(), "eth0"),
            &conf(&lab, "hA", v),
        );
        assert_eq!(check.code, 0, "{v}: {}", check.raw);
        // One source of truth: the attachment is a record like any other.
        let listed = lab.records("hA");
        let record = listed
            .iter()
            .find(|r| r["id"] == format!("{container}:eth0"))
            .unwrap_or_else(|| panic!("{listed:?}"));
        assert_eq!(record["cni"]["container_id"], container.as_str());
        assert_eq!(record["cni"]["ifname"], "eth0");
        assert_eq!(record["state"], "running");

        let del = plugin(
            &lab,
            "hA",
            "DEL",
            (&container, &pod.path(), "eth0"),
            &conf(&lab, "hA", v),
        );
        assert_eq!(del.code, 0, "{v}: {}", del.raw);
        assert!(!pod.ip(&["-o", "link"]).contains("eth0"));
        let again = plugin(
            &lab,
            "hA",
            "DEL",
            (&container, &pod.path(), "eth0"),
            &conf(&lab, "hA", v),
        );
        assert_eq!(again.code, 0, "DEL twice: {}", again.raw);
        // CHECK of what is gone: the container is unknown.
        let gone = plugin(
            &lab,
            "hA",
            "CHECK",
            (&container, &pod.path(), "eth0"),
            &conf(&lab, "hA", v),
        );
        assert_eq!(gone.output["code"], 3, "{}", gone.raw);
    }
    assert!(lab.records("hA").is_empty());
    assert!(!lab.store_keys("hA").iter().any(|k| k.contains("/ipam/")));
}

#[test]
fn errors_carry_the_spec_codes_and_one_line() {
    let lab = Lab::new(&["hA"]);
    lab.create_lan("hA", &[]);
    let pod = Pod::new(&lab, "e1");
    let other = Pod::new(&lab, "e2");
    let base = conf(&lab, "hA", "1.1.0");
    let add = |container: &str, pod: &Pod, config: &Value| {
        plugin(&lab, "hA", "ADD", (container, &pod.path(), "eth0"), config)
    };
    let first = add("c1", &pod, &base);
    assert_eq!(first.code, 0, "{}", first.raw);

    let mut cases: Vec<(&str, Value, &Pod, &str, u64, &str)> = Vec::new();
    // ADD twice for the same container and interface.
    cases.push((
        "c1",
        base.clone(),
        &pod,
        "eth0",
        102,
        "ADD twice without DEL",
    ));
    let mut held = base.clone();
    held["runtimeConfig"] = json!({"ips": ["192.0.2.64/24"]});
    cases.push((
        "c2",
        held,
        &other,
        "eth0",
        100,
        "192.0.2.64 is held by container c1:eth0",
    ));
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("network");
    cases.push((
        "c2",
        missing,
        &other,
        "eth0",
        7,
        "\"network\" must name a network",
    ));
    let mut unknown = base.clone();
    unknown["network"] = json!("nosuch");
    cases.push(("c2", unknown, &other, "eth0", 7, "no network \"nosuch\""));
    let mut version = base.clone();
    version["cniVersion"] = json!("9.9.9");
    cases.push((
        "c2",
        version,
        &other,
        "eth0",
        1,
        "cniVersion \"9.9.9\" is not supported",
    ));
    let mut outside = base.clone();
    outside["runtimeConfig"] = json!({"ips": ["198.51.100.9"]});
    cases.push(("c2", outside, &other, "eth0", 7, "outside its subnet"));
    for (container, config, pod, ifname, code, words) in cases {
        let out = plugin(&lab, "hA", "ADD", (container, &pod.path(), ifname), &config);
        assert_eq!(out.code, 1, "{words}: {}", out.raw);
        assert_eq!(out.output["code"], code, "{words}: {}", out.raw);
        let msg = out.output["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(words), "{words}: {msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
    // Bad JSON, a missing variable.
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.ns("hA")))
        .arg(MACVLAN)
        .env("CNI_COMMAND", "ADD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"{not json")?;
            c.wait_with_output()
        })
        .unwrap();
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["code"], 6, "{error}");
    let out = plugin(&lab, "hA", "ADD", ("", &other.path(), "eth0"), &base);
    assert_eq!(out.output["code"], 4, "{}", out.raw);
    assert!(out.output["msg"]
        .as_str()
        .unwrap()
        .contains("CNI_CONTAINERID"));
    // Nothing left by any refusal: the first attachment alone.
    assert_eq!(lab.records("hA").len(), 1);
    assert!(!other.ip(&["-o", "link"]).contains("eth0"));
}

#[test]
fn del_after_the_namespace_is_gone_and_gc_keeps_only_valid_attachments() {
    let lab = Lab::new(&["hA"]);
    lab.create_lan("hA", &[]);
    let base = conf(&lab, "hA", "1.1.0");
    let mut pods: Vec<Pod> = (0..4).map(|i| Pod::new(&lab, &format!("g{i}"))).collect();
    for (i, pod) in pods.iter().enumerate() {
        let add = plugin(
            &lab,
            "hA",
            "ADD",
            (&format!("g{i}"), &pod.path(), "eth0"),
            &base,
        );
        assert_eq!(add.code, 0, "{}", add.raw);
    }
    // A second interface of g0 on the same network: no default route there.
    let net1 = plugin(&lab, "hA", "ADD", ("g0", &pods[0].path(), "net1"), &base);
    assert_eq!(net1.code, 0, "{}", net1.raw);
    assert!(net1.output.get("routes").is_none(), "{}", net1.output);
    assert!(!pods[0].ip(&["route", "show", "default"]).contains("net1"));
    assert_eq!(lab.records("hA").len(), 5);

    // `macvlan gc` and CNI agree: g3's namespace gone without any DEL, gc
    // collects it (and nothing whose namespace lives); a DEL after that
    // still succeeds.
    let g3 = pods.remove(3);
    let g3_path = g3.path();
    drop(g3);
    let out = lab.macvlan("hA", &["gc"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(lab.records("hA").len(), 4, "{:?}", lab.records("hA"));
    let del = plugin(&lab, "hA", "DEL", ("g3", &g3_path, "eth0"), &base);
    assert_eq!(del.code, 0, "{}", del.raw);

    // The pod's namespace is gone before DEL: DEL still succeeds and frees.
    let g2 = pods.remove(2);
    let path = g2.path();
    drop(g2);
    let del = plugin(&lab, "hA", "DEL", ("g2", &path, "eth0"), &base);
    assert_eq!(del.code, 0, "{}", del.raw);
    assert_eq!(lab.records("hA").len(), 3);

    // GC with g1's attachment valid: g0's two go.
    let mut gc = base.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "g1", "ifname": "eth0"}]);
    let out = plugin(&lab, "hA", "GC", ("", "", ""), &gc);
    assert_eq!(out.code, 0, "{}", out.raw);
    let left: Vec<String> = lab
        .records("hA")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, ["g1:eth0"]);
    let held: Vec<String> = lab
        .store_keys("hA")
        .into_iter()
        .filter(|k| k.contains("/ipam/"))
        .collect();
    assert_eq!(held.len(), 1, "{held:?}");
}

#[test]
fn status_fails_clearly_without_the_store() {
    let lab = Lab::new(&["hA"]);
    lab.create_lan("hA", &[]);
    let ok = plugin(
        &lab,
        "hA",
        "STATUS",
        ("", "", ""),
        &conf(&lab, "hA", "1.1.0"),
    );
    assert_eq!(ok.code, 0, "{}", ok.raw);
    let unreachable = lab.dir.path().join("unreachable.toml");
    std::fs::write(
        &unreachable,
        "store = \"etcd://127.0.0.1:9\"\n[etcd]\ntimeout = \"1s\"\n",
    )
    .unwrap();
    let mut config = conf(&lab, "hA", "1.1.0");
    config["config"] = json!(unreachable);
    let out = plugin(&lab, "hA", "STATUS", ("", "", ""), &config);
    assert_eq!(out.code, 1, "{}", out.raw);
    assert_eq!(out.output["code"], 50, "{}", out.raw);
    let msg = out.output["msg"].as_str().unwrap();
    assert!(
        msg.contains("the store is unreachable") && msg.contains("127.0.0.1:9"),
        "{msg}"
    );
}

#[test]
fn chained_after_another_plugin_the_previous_result_is_passed_on() {
    let lab = Lab::new(&["hA"]);
    lab.create_lan("hA", &[]);
    let pod = Pod::new(&lab, "ch");
    let mut config = conf(&lab, "hA", "1.0.0");
    config["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "lo", "sandbox": pod.path()}],
        "ips": [{"address": "127.0.0.1/8", "interface": 0}],
        "dns": {"nameservers": ["192.0.2.53"]}
    });
    let out = plugin(&lab, "hA", "ADD", ("ch", &pod.path(), "eth0"), &config);
    assert_eq!(out.code, 0, "{}", out.raw);
    assert_eq!(out.output["interfaces"][0]["name"], "lo");
    assert_eq!(out.output["interfaces"][1]["name"], "eth0");
    assert_eq!(out.output["ips"][1]["interface"], 1);
    assert_eq!(out.output["dns"]["nameservers"][0], "192.0.2.53");
    let del = plugin(&lab, "hA", "DEL", ("ch", &pod.path(), "eth0"), &config);
    assert_eq!(del.code, 0, "{}", del.raw);
}

/// podman 4.3 with its CNI backend and our conflist: `podman run --network
/// lan` gets an address from the store's network, stop + start gets the
/// same address and MAC back, `podman rm` releases it.
#[test]
fn podman_with_its_cni_backend_uses_the_store_network() {
    let lab = Lab::new(&["hA"]);
    lab.create_lan("hA", &[]);
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "lan",
        "plugins": [{
            "type": "macvlan-runc",
            "network": "lan",
            "config": lab.config_path("hA"),
        }]
    });
    let podman = common::podman::Podman::with_cni(&lab, "hA", &[("lan", conflist)]);
    podman.must(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "lan",
        "--cap-add",
        "NET_RAW",
        common::podman::IMAGE,
        "sleep",
        "100000",
    ]);
    let eth0 = || podman.must(&["exec", "web", "ip", "-o", "addr", "show", "dev", "eth0"]);
    let first = eth0();
    assert!(first.contains("inet 192.0.2.64/24"), "{first}");
    let ping = podman.podman(&["exec", "web", "ping", "-c", "2", "-W", "3", common::GATEWAY]);
    assert!(ping.status.success(), "{}", text(&ping));
    let records = lab.records("hA");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["cni"]["name"], "lan");
    assert_eq!(records[0]["cni"]["ifname"], "eth0");
    let mac = records[0]["mac"].clone();

    podman.must(&["stop", "-t", "0", "web"]);
    podman.must(&["start", "web"]);
    let again = eth0();
    assert!(again.contains("inet 192.0.2.64/24"), "{again}");
    assert_eq!(lab.records("hA")[0]["mac"], mac);

    podman.must(&["rm", "--force", "--time", "0", "web"]);
    assert!(lab.records("hA").is_empty(), "{:?}", lab.records("hA"));
    assert!(!lab.store_keys("hA").iter().any(|k| k.contains("/ipam/")));
}

/// A DHCP network through podman's CNI backend: the lease comes from
/// dnsmasq, `macvlan daemon` renews it (seen by the server), and `podman
/// rm` releases it.
#[test]
fn a_dhcp_network_through_podmans_cni_backend_renews_and_releases() {
    let lab = Lab::new(&["hA"]);
    let server = common::dhcp_server::Dnsmasq::start(&lab, "cni", &[]);
    let out = lab.macvlan(
        "hA",
        &[
            "network", "create", "office", "--parent", UPLINK, "--ipam", "dhcp",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "office",
        "plugins": [{"type": "macvlan-runc", "network": "office", "config": lab.config_path("hA")}]
    });
    let podman = common::podman::Podman::with_cni(&lab, "hA", &[("office", conflist)]);
    podman.must(&[
        "run",
        "-d",
        "--name",
        "desk",
        "--network",
        "office",
        common::podman::IMAGE,
        "sleep",
        "100000",
    ]);
    let records = lab.records("hA");
    assert_eq!(records.len(), 1, "{records:?}");
    let lease = records[0]["lease"]["address"].as_str().unwrap().to_string();
    let mac = records[0]["mac"].as_str().unwrap().to_string();
    let shown = podman.must(&["exec", "desk", "ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(shown.contains(&format!("inet {lease}")), "{shown}");
    server.wait_lease(&mac);

    // T1 now: the daemon renews through the CNI attachment's namespace.
    lab.renew_now("hA", records[0]["id"].as_str().unwrap());
    common::wait_for(
        std::time::Duration::from_secs(10),
        "the daemon renews the CNI attachment's lease",
        || {
            let log = lab.log("hA");
            assert!(!log.contains("event=dhcp-release"), "{log}");
            log.contains("event=dhcp-renew")
        },
    );

    podman.must(&["rm", "--force", "--time", "0", "desk"]);
    common::wait_for(
        std::time::Duration::from_secs(5),
        "dnsmasq frees the released lease",
        || server.lease_for_mac(&mac).is_none(),
    );
    assert!(lab.records("hA").is_empty(), "{:?}", lab.records("hA"));
}

/// A CNI attachment asking for discovery (`args`): published while its
/// port answers inside the pod's namespace, withdrawn by DEL.
#[test]
fn a_cni_attachment_registers_its_service() {
    let lab = Lab::new(&["hA"]);
    lab.create_lan("hA", &[]);
    let pod = Pod::new(&lab, "web");
    let www = lab.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello\n").unwrap();
    let mut config = conf(&lab, "hA", "1.1.0");
    config["args"] =
        json!({"macvlan.discover": "true", "macvlan.port": "8000", "macvlan.service": "web"});
    let add = plugin(&lab, "hA", "ADD", ("w1", &pod.path(), "eth0"), &config);
    assert_eq!(add.code, 0, "{}", add.raw);
    // The pod's server, in its namespace.
    let mut server = Command::new("nsenter")
        .arg(format!("--net={}", pod.path()))
        .args(["busybox", "httpd", "-f", "-p", "8000", "-h"])
        .arg(&www)
        .spawn()
        .unwrap();
    let found = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let out = lab.macvlan("hA", &["lookup", "web"]);
        out.status.success() && text(&out).contains("192.0.2.64:8000")
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(found, "never published: {}", lab.log("hA"));
    let del = plugin(&lab, "hA", "DEL", ("w1", &pod.path(), "eth0"), &config);
    assert_eq!(del.code, 0, "{}", del.raw);
    let out = lab.macvlan("hA", &["lookup", "web"]);
    assert!(!out.status.success(), "{}", text(&out));
}

/// The `bandwidth` capability: tbf on the pod's interface and an ifb for
/// ingress, at the rates asked for (bit/s in, kbit/s recorded).
#[test]
fn the_bandwidth_capability_limits_the_attachment() {
    let lab = Lab::new(&["hA"]);
    lab.create_lan("hA", &[]);
    let pod = Pod::new(&lab, "bw");
    let mut config = conf(&lab, "hA", "1.0.0");
    config["runtimeConfig"] = json!({"bandwidth": {
        "egressRate": 10_000_000, "egressBurst": 100_000,
        "ingressRate": 5_000_000, "ingressBurst": 100_000
    }});
    let add = plugin(&lab, "hA", "ADD", ("bw", &pod.path(), "eth0"), &config);
    assert_eq!(add.code, 0, "{}", add.raw);
    let netns = format!("--net={}", pod.path());
    let qdisc = must("nsenter", &[&netns, "tc", "qdisc", "show", "dev", "eth0"]);
    assert!(
        qdisc.contains("qdisc tbf") && qdisc.contains("rate 10Mbit"),
        "{qdisc}"
    );
    assert!(
        pod.ip(&["-o", "link"]).contains("ifb"),
        "an ifb for ingress"
    );
    let record = lab.records("hA").remove(0);
    assert_eq!(record["egress"]["rate_kbit"], 10_000, "{record}");
    assert_eq!(record["ingress"]["rate_kbit"], 5_000, "{record}");
    let del = plugin(&lab, "hA", "DEL", ("bw", &pod.path(), "eth0"), &config);
    assert_eq!(del.code, 0, "{}", del.raw);
}
