//! Prometheus metrics (issue 17): `macvlan daemon --metrics` and `macvlan
//! dns --metrics` scraped with curl during known actions; every value
//! checked, and the output parsed by a Prometheus text-format parser.

mod common;

use std::time::Duration;

use common::dhcp_server::Dnsmasq;
use common::{text, wait_for, Lab};

/// A scrape of `url` from `node`'s namespace, parsed.
fn scrape(lab: &Lab, node: &str, url: &str) -> prometheus_parse::Scrape {
    let netns = format!("--net=/run/netns/{}", lab.ns(node));
    let out = common::run("nsenter", &[&netns, "curl", "-sf", "--max-time", "3", url]);
    assert!(out.status.success(), "curl {url}: {}", text(&out));
    let body = String::from_utf8(out.stdout).unwrap();
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not the text format: {e}\n{body}"))
}

/// The value of `metric` with exactly `labels` (none: absent).
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == metric
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn the_daemon_and_the_responder_export_what_happened() {
    let lab = Lab::new(&["hA"]);
    lab.create_lan("hA", &[]);
    let server = Dnsmasq::start(&lab, "metrics", &["--no-ping", "--dhcp-option=option:T1,3"]);
    std::fs::write(lab.rootfs.join("www/index.html"), "up\n").unwrap();
    let daemon_url = "http://127.0.0.1:9641/metrics";
    let _daemon = lab.spawn_macvlan("hA", "hA", &["daemon", "--metrics", "127.0.0.1:9641"]);
    wait_for(Duration::from_secs(5), "the daemon's metrics", || {
        let netns = format!("--net=/run/netns/{}", lab.ns("hA"));
        common::run("nsenter", &[&netns, "curl", "-sf", daemon_url])
            .status
            .success()
    });

    // Three containers on the network, one of them a registered service,
    // and one DHCP container.
    for (tag, address) in [("a", "192.0.2.65"), ("b", "192.0.2.66")] {
        let id = lab.id(tag);
        let env = format!("IP={address}");
        let bundle = lab.bundle("hA", &id, &["NETWORK=lan", &env], &[]);
        lab.start("hA", &id, &bundle).unwrap();
    }
    let web = lab.id("web");
    lab.start_web(
        "hA",
        &web,
        &[
            "NETWORK=lan",
            "IP=192.0.2.67",
            "DISCOVER=true",
            "PORT=8000",
            "SERVICE=web",
        ],
    );
    let dhcp = lab.id("dhcp");
    let bundle = lab.bundle("hA", &dhcp, &["TYPE=dhcp", "HOSTIF=lan0"], &[]);
    lab.start("hA", &dhcp, &bundle).unwrap();
    wait_for(
        Duration::from_secs(15),
        "a renewal and the service up",
        || {
            let now = scrape(&lab, "hA", daemon_url);
            value(&now, "macvlan_dhcp_events_total", &[("event", "renewed")]).unwrap_or(0.0) >= 1.0
                && value(&now, "macvlan_registrations", &[("state", "up")]) == Some(1.0)
        },
    );
    let now = scrape(&lab, "hA", daemon_url);
    // The pool: 14 addresses in 192.0.2.64/28, 3 held.
    assert_eq!(
        value(
            &now,
            "macvlan_network_addresses",
            &[("network", "lan"), ("state", "used")]
        ),
        Some(3.0)
    );
    let ls = text(&lab.macvlan("hA", &["network", "ls"]));
    let free = ls
        .lines()
        .find(|l| l.starts_with("lan "))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|f| f.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{ls}"));
    assert_eq!(
        value(
            &now,
            "macvlan_network_addresses",
            &[("network", "lan"), ("state", "free")]
        ),
        Some(free)
    );
    let records: Vec<String> = now
        .samples
        .iter()
        .filter(|s| s.metric == "macvlan_records")
        .map(|s| format!("{} {:?}", s.labels, s.value))
        .collect();
    assert_eq!(
        value(
            &now,
            "macvlan_records",
            &[("type", "flat"), ("state", "running")]
        ),
        Some(3.0),
        "{records:?}"
    );
    assert_eq!(
        value(
            &now,
            "macvlan_records",
            &[("type", "dhcp"), ("state", "running")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&now, "macvlan_dhcp_leases", &[("family", "4")]),
        Some(1.0)
    );
    assert_eq!(
        value(&now, "macvlan_registrations", &[("state", "down")]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &now,
            "macvlan_dhcp_events_total",
            &[("event", "renew_unanswered")]
        ),
        None
    );

    // The daemon's store requests are timed (SQLite: the list of records
    // every round), and none failed.
    let lists = now
        .samples
        .iter()
        .find(|s| s.metric == "macvlan_store_request_seconds" && s.labels.get("op") == Some("list"))
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.last().map(|b| b.count).unwrap_or(0.0)
            }
            _ => 0.0,
        });
    assert!(lists.unwrap_or(0.0) >= 1.0, "{lists:?}");
    assert!(!now
        .samples
        .iter()
        .any(|s| s.metric == "macvlan_store_errors_total"));

    // The server goes away: the next renewal goes unanswered, and says so.
    drop(server);
    wait_for(
        Duration::from_secs(15),
        "an unanswered renewal counted",
        || {
            value(
                &scrape(&lab, "hA", daemon_url),
                "macvlan_dhcp_events_total",
                &[("event", "renew_unanswered")],
            )
            .unwrap_or(0.0)
                >= 1.0
        },
    );
    // A stopped container: one running record fewer, one stopped.
    lab.stop("hA", &lab.id("a"));
    let now = scrape(&lab, "hA", daemon_url);
    assert_eq!(
        value(
            &now,
            "macvlan_records",
            &[("type", "flat"), ("state", "running")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &now,
            "macvlan_records",
            &[("type", "flat"), ("state", "stopped")]
        ),
        Some(1.0)
    );

    // The hooks' tally: four attaches and one poststop, timed; then an
    // attach refused at validation counted as a failure of that step.
    let hooks = |scrape: &prometheus_parse::Scrape, operation: &str| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "macvlan_hook_duration_seconds"
                    && s.labels.get("operation") == Some(operation)
            })
            .map(|s| match &s.value {
                prometheus_parse::Value::Histogram(buckets) => {
                    // Cumulative, and every attach here took under 30 s.
                    assert!(
                        buckets.windows(2).all(|w| w[0].count <= w[1].count),
                        "{buckets:?}"
                    );
                    buckets.last().map(|b| b.count).unwrap_or(0.0)
                }
                other => panic!("{other:?}"),
            })
    };
    let refused = |scrape: &prometheus_parse::Scrape| {
        value(
            scrape,
            "macvlan_hook_failures_total",
            &[("operation", "attach"), ("step", "validate")],
        )
    };
    assert_eq!(hooks(&now, "attach"), Some(4.0));
    assert_eq!(hooks(&now, "poststop"), Some(1.0));
    assert_eq!(refused(&now), None);
    let outside = lab.id("outside");
    let bundle = lab.bundle("hA", &outside, &["NETWORK=lan", "IP=198.51.100.9"], &[]);
    assert!(lab.start("hA", &outside, &bundle).is_err());
    let now = scrape(&lab, "hA", daemon_url);
    assert_eq!(hooks(&now, "attach"), Some(5.0));
    assert_eq!(refused(&now), Some(1.0));

    // The responder counts queries by type and response code.
    let _dns = lab.spawn_macvlan(
        "gw",
        "hA",
        &[
            "dns",
            "--listen",
            "192.0.2.1:53",
            "--domain",
            "lab",
            "--metrics",
            "192.0.2.1:9642",
        ],
    );
    let dig = |name: &str| {
        let netns = format!("--net=/run/netns/{}", lab.ns("gw"));
        text(&common::run(
            "nsenter",
            &[
                &netns,
                "dig",
                "+short",
                "+time=1",
                "+tries=1",
                "@192.0.2.1",
                name,
            ],
        ))
    };
    wait_for(Duration::from_secs(10), "web.lab answered", || {
        dig("web.lab").contains("192.0.2.67")
    });
    dig("web.lab");
    dig("nothing.lab");
    let dns = scrape(&lab, "gw", "http://192.0.2.1:9642/metrics");
    assert!(
        value(
            &dns,
            "macvlan_dns_queries_total",
            &[("qtype", "A"), ("rcode", "NoError")]
        )
        .unwrap_or(0.0)
            >= 2.0
    );
    assert!(
        value(
            &dns,
            "macvlan_dns_queries_total",
            &[("qtype", "A"), ("rcode", "NXDomain")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    for tag in ["b", "web", "dhcp"] {
        lab.stop("hA", &lab.id(tag));
    }
}
