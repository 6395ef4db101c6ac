//! Prometheus metrics of `macvlan daemon` and `macvlan dns` (`--metrics
//! ADDR`, issue 17): counters the threads bump as things happen, gauges
//! read from the store at each scrape, served in the Prometheus text
//! format on a thread of its own. Off unless asked for: hooks never start
//! it, and `count`/`set` are then no-ops.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, Result};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Store request durations: 0.5 ms to about 4 s.
fn store_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// The metric families, by name.
struct Metrics {
    registry: Registry,
    counters: Vec<(&'static str, Family<Labels, Counter>)>,
    gauges: Vec<(&'static str, Family<Labels, Gauge>)>,
    store_seconds: Histograms,
    /// Sets the scrape-time gauges (from the store) just before encoding,
    /// and returns families it renders itself (the hooks' tally).
    refresh: Box<dyn Fn() -> String + Send + Sync>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The counters (`_total` is added by the encoder) and gauges served.
const COUNTERS: &[(&str, &str)] = &[
    ("macvlan_dhcp_events", "DHCP lease events of the keeper, by event (acquired, renewed, renew_unanswered, nak, expired, acquire_failed, refused, released)"),
    ("macvlan_health_check_failures", "Service health checks that failed"),
    ("macvlan_daemon_errors", "Rounds of a daemon thread that failed (store unreachable, say), by thread"),
    ("macvlan_dns_queries", "DNS queries answered, by query type and response code"),
    ("macvlan_store_errors", "Store requests that failed, by operation"),
];
const GAUGES: &[(&str, &str)] = &[
    (
        "macvlan_dhcp_leases",
        "DHCP leases this host keeps, by family (4, 6)",
    ),
    (
        "macvlan_registrations",
        "Service registrations on this host, by health (up, down)",
    ),
    (
        "macvlan_network_addresses",
        "Addresses of each network's pool, in use or free (static networks)",
    ),
    (
        "macvlan_records",
        "Attachment records of this host, by network type and state",
    ),
];

/// Starts serving the metrics on `listen`; `refresh` sets the gauges read
/// at scrape time and returns what it renders itself.
pub fn serve(
    listen: SocketAddr,
    refresh: impl Fn() -> String + Send + Sync + 'static,
) -> Result<()> {
    let mut registry = Registry::default();
    let counters = COUNTERS
        .iter()
        .map(|(name, help)| {
            let family = Family::<Labels, Counter>::default();
            registry.register(*name, *help, family.clone());
            (*name, family)
        })
        .collect();
    let gauges = GAUGES
        .iter()
        .map(|(name, help)| {
            let family = Family::<Labels, Gauge>::default();
            registry.register(*name, *help, family.clone());
            (*name, family)
        })
        .collect();
    let store_seconds = Histograms::new_with_constructor(store_histogram as fn() -> Histogram);
    registry.register(
        "macvlan_store_request_seconds",
        "Store requests of this process, by operation",
        store_seconds.clone(),
    );
    let listener =
        TcpListener::bind(listen).with_context(|| format!("listen on {listen} (--metrics)"))?;
    let _ = METRICS.set(Metrics {
        registry,
        counters,
        gauges,
        store_seconds,
        refresh: Box::new(refresh),
    });
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = answer(stream);
            }
        })
        .context("start the metrics thread")?;
    Ok(())
}

/// One scrape: any GET gets the text exposition.
fn answer(mut stream: std::net::TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = [0u8; 1024];
    let n = stream.read(&mut request)?;
    let (status, body) = if request[..n].starts_with(b"GET ") {
        ("200 OK", render())
    } else {
        ("405 Method Not Allowed", String::new())
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The text exposition of every metric.
pub fn render() -> String {
    let Some(metrics) = METRICS.get() else {
        return String::new();
    };
    let own = (metrics.refresh)();
    let mut text = String::new();
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &metrics.registry);
    text.push_str(&own);
    text
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Adds one to counter `name` with `pairs` as labels (nothing when the
/// metrics are off).
pub fn count(name: &str, pairs: &[(&str, &str)]) {
    if let Some(metrics) = METRICS.get() {
        if let Some((_, family)) = metrics.counters.iter().find(|(n, _)| *n == name) {
            family.get_or_create(&labels(pairs)).inc();
        }
    }
}

/// Sets gauge `name` with `pairs` as labels.
pub fn set(name: &str, pairs: &[(&str, &str)], value: i64) {
    if let Some(metrics) = METRICS.get() {
        if let Some((_, family)) = metrics.gauges.iter().find(|(n, _)| *n == name) {
            family.get_or_create(&labels(pairs)).set(value);
        }
    }
}

/// Forgets every series of gauge `name` (before setting it anew at a scrape).
pub fn clear(name: &str) {
    if let Some(metrics) = METRICS.get() {
        if let Some((_, family)) = metrics.gauges.iter().find(|(n, _)| *n == name) {
            family.clear();
        }
    }
}

/// Whether this process serves metrics (then its store is `Metered`).
pub fn enabled() -> bool {
    METRICS.get().is_some()
}

/// A store whose requests are timed and whose failures are counted.
pub struct Metered(pub Box<dyn crate::store::Store>);

fn observe<T>(
    op: &str,
    request: impl FnOnce() -> crate::store::Result<T>,
) -> crate::store::Result<T> {
    let started = std::time::Instant::now();
    let result = request();
    if let Some(metrics) = METRICS.get() {
        metrics
            .store_seconds
            .get_or_create(&labels(&[("op", op)]))
            .observe(started.elapsed().as_secs_f64());
    }
    if result.is_err() {
        count("macvlan_store_errors", &[("op", op)]);
    }
    result
}

impl crate::store::Store for Metered {
    fn still_current(&self) -> bool {
        self.0.still_current()
    }
    fn get(&self, key: &str) -> crate::store::Result<Option<String>> {
        observe("get", || self.0.get(key))
    }
    fn list(&self, prefix: &str) -> crate::store::Result<Vec<(String, String)>> {
        observe("list", || self.0.list(prefix))
    }
    fn transaction(
        &self,
        compares: &[crate::store::Compare],
        ops: &[crate::store::Op],
    ) -> crate::store::Result<bool> {
        observe("transaction", || self.0.transaction(compares, ops))
    }
    fn grant_lease(&self, ttl: Duration) -> crate::store::Result<crate::store::LeaseId> {
        observe("grant_lease", || self.0.grant_lease(ttl))
    }
    fn keep_alive(&self, lease: crate::store::LeaseId) -> crate::store::Result<bool> {
        observe("keep_alive", || self.0.keep_alive(lease))
    }
    fn revoke_lease(&self, lease: crate::store::LeaseId) -> crate::store::Result<()> {
        observe("revoke_lease", || self.0.revoke_lease(lease))
    }
}

/// The scrape-time gauges of `macvlan daemon`: each network's pool and this
/// host's records, read from the store.
pub fn refresh_from_store(ctx: &crate::net::Context) {
    let Ok(store) = ctx.store() else { return };
    clear("macvlan_network_addresses");
    if let Ok(networks) = crate::network::list(store, &ctx.keys) {
        for network in networks {
            if let Ok((used, free)) = crate::network::usage(store, &ctx.keys, &network) {
                set(
                    "macvlan_network_addresses",
                    &[("network", &network.name), ("state", "used")],
                    i64::from(used),
                );
                if let Some(free) = free {
                    set(
                        "macvlan_network_addresses",
                        &[("network", &network.name), ("state", "free")],
                        i64::from(free),
                    );
                }
            }
        }
    }
    clear("macvlan_records");
    if let Ok(records) = crate::ipam::list_records(store, &ctx.keys) {
        let mut counts: std::collections::BTreeMap<(String, String), i64> = Default::default();
        for (_, _, text) in records {
            let Ok(record) = serde_json::from_str::<crate::record::FlatRecord>(&text) else {
                continue;
            };
            if ctx.owns(&record) {
                *counts
                    .entry((
                        record.network_type().to_string(),
                        record.state.as_str().to_string(),
                    ))
                    .or_default() += 1;
            }
        }
        for ((kind, state), n) in counts {
            set("macvlan_records", &[("type", &kind), ("state", &state)], n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_in_the_text_format() {
        assert_eq!(render(), "", "off until served");
        count("macvlan_dhcp_events", &[("event", "renewed")]);
        serve("127.0.0.1:0".parse().unwrap(), || {
            set(
                "macvlan_records",
                &[("type", "dhcp"), ("state", "running")],
                2,
            );
            "# TYPE own_family counter\nown_family_total 1\n".to_string()
        })
        .unwrap();
        count("macvlan_dhcp_events", &[("event", "renewed")]);
        count("macvlan_dhcp_events", &[("event", "renewed")]);
        count("no_such_metric", &[]);
        let text = render();
        assert!(
            text.contains("# TYPE macvlan_dhcp_events_total counter\n")
                && text.contains("macvlan_dhcp_events_total{event=\"renewed\"} 2\n")
                && text.contains("macvlan_records{type=\"dhcp\",state=\"running\"} 2\n")
                && text.ends_with("own_family_total 1\n"),
            "{text}"
        );
    }
}
