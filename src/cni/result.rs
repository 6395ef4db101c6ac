//! The ADD result in the shape of the configuration's spec version (0.4.0
//! numbers each IP's `version`; 1.x does not), appended to a previous
//! plugin's result when there is one.

use serde_json::{json, Value};

use crate::net::Attached;
use crate::record::FlatRecord;

/// The result of an ADD that made `attached` (whose record is `record`) in
/// namespace `netns`; `primary`: it carries the default routes.
pub fn render(
    version: &str,
    previous: Option<&Value>,
    attached: &Attached,
    record: &FlatRecord,
    netns: &str,
    primary: bool,
) -> String {
    let old = |key: &str| -> Vec<Value> {
        previous
            .and_then(|p| p[key].as_array())
            .cloned()
            .unwrap_or_default()
    };
    let mut interfaces = old("interfaces");
    let index = interfaces.len();
    interfaces.push(json!({
        "name": attached.ifname,
        "mac": attached.mac,
        "sandbox": netns,
    }));
    let numbered = version == "0.4.0";
    let mut ips = old("ips");
    let mut routes = old("routes");
    let families = [
        (
            Some(record.ip.as_str()).filter(|a| !a.is_empty()),
            record.gateway.as_deref(),
            "4",
            "0.0.0.0/0",
        ),
        (
            record.ip6.as_deref(),
            record.gateway6.as_deref(),
            "6",
            "::/0",
        ),
    ];
    for (address, gateway, family, default) in families {
        let Some(address) = address else { continue };
        let mut ip = json!({"address": address, "interface": index});
        if let Some(gateway) = gateway {
            ip["gateway"] = json!(gateway);
        }
        if numbered {
            ip["version"] = json!(family);
        }
        ips.push(ip);
        if let (true, Some(gateway)) = (primary, gateway) {
            routes.push(json!({"dst": default, "gw": gateway}));
        }
    }
    let mut result = json!({
        "cniVersion": version,
        "interfaces": interfaces,
        "ips": ips,
    });
    if !routes.is_empty() {
        result["routes"] = json!(routes);
    }
    // DNS from the leases (DHCPv4's servers and domain, DHCPv6's servers),
    // else what a previous plugin said.
    let mut nameservers: Vec<String> = Vec::new();
    let mut domain = None;
    if let Some(lease) = &record.lease {
        nameservers.extend(lease.dns.iter().map(|a| a.to_string()));
        domain = lease.domain.clone();
    }
    if let Some(lease) = &record.lease6 {
        nameservers.extend(lease.dns.iter().map(|a| a.to_string()));
    }
    if !nameservers.is_empty() {
        let mut dns = json!({"nameservers": nameservers});
        if let Some(domain) = domain {
            dns["domain"] = json!(domain);
        }
        result["dns"] = dns;
    } else if let Some(dns) = previous.and_then(|p| p.get("dns")) {
        result["dns"] = dns.clone();
    }
    result.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached() -> Attached {
        Attached {
            ifname: "net1".into(),
            address: "192.0.2.64/24,2001:db8::100/64".into(),
            ip: Some("192.0.2.64".parse().unwrap()),
            ip6: Some("2001:db8::100".parse().unwrap()),
            mac: "02:00:00:00:00:01".into(),
            parent: "lan0".into(),
            host_reachable: false,
        }
    }

    fn record() -> FlatRecord {
        let mut r = FlatRecord::sample("192.0.2.64/24");
        r.gateway = Some("192.0.2.1".into());
        r.ip6 = Some("2001:db8::100/64".into());
        r.gateway6 = Some("fe80::1".into());
        r
    }

    #[test]
    fn shapes_per_version_and_routes_only_on_the_primary() {
        let v1: Value = serde_json::from_str(&render(
            "1.1.0",
            None,
            &attached(),
            &record(),
            "/run/netns/a",
            true,
        ))
        .unwrap();
        assert_eq!(v1["cniVersion"], "1.1.0");
        assert_eq!(v1["interfaces"][0]["sandbox"], "/run/netns/a");
        assert_eq!(v1["ips"][0]["address"], "192.0.2.64/24");
        assert_eq!(v1["ips"][0]["gateway"], "192.0.2.1");
        assert!(v1["ips"][0].get("version").is_none());
        assert_eq!(v1["ips"][1]["address"], "2001:db8::100/64");
        assert_eq!(v1["routes"][1], json!({"dst": "::/0", "gw": "fe80::1"}));
        let v04: Value =
            serde_json::from_str(&render("0.4.0", None, &attached(), &record(), "/n", false))
                .unwrap();
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["ips"][1]["version"], "6");
        assert!(v04.get("routes").is_none());
    }

    #[test]
    fn a_previous_result_is_passed_on_with_ours_appended() {
        let previous = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/n"}],
            "ips": [{"address": "198.51.100.5/24", "interface": 0}],
            "dns": {"nameservers": ["198.51.100.53"]}
        });
        let out: Value = serde_json::from_str(&render(
            "1.0.0",
            Some(&previous),
            &attached(),
            &record(),
            "/n",
            false,
        ))
        .unwrap();
        assert_eq!(out["interfaces"].as_array().unwrap().len(), 2);
        assert_eq!(out["ips"][1]["interface"], 1);
        assert_eq!(out["ips"][0]["address"], "198.51.100.5/24");
        assert_eq!(out["dns"]["nameservers"][0], "198.51.100.53");
    }
}
