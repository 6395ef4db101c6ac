//! VLAN networks on a kernel with 802.1Q: a QEMU guest (this machine's
//! kernel has none) runs tests/guest/vlan.sh, a lab of namespaces with two
//! hosts, a gateway host and containers on VLANs test1 and test2, all
//! attached by the hook with an OCI state JSON.

mod common;

use std::time::{Duration, Instant};

use common::guest::{results, Guest};

/// Every check the guest script makes; each must report PASS.
const CHECKS: [&str; 34] = [
    "vlan-create-test1",
    "vlan-create-test2",
    "vlan-overlap-refused",
    "vlan-gateway-test1",
    "vlan-gateway-test2",
    "attach-c1",
    "attach-c3-test2",
    "attach-c4-requested",
    "attach-race-hB",
    "lowest-free-address",
    "requested-address",
    "test2-address",
    "distinct-addresses",
    "one-sub-interface-per-host",
    "sub-interfaces-hA",
    "sub-interface-test2-hA",
    "test1-same-vlan-across-hosts",
    "test1-across-hosts-back",
    "test1-second-container-hB",
    "test1-same-host",
    "test1-gateway-from-hA",
    "test1-gateway-from-hB",
    "test2-own-gateway",
    "test2-cannot-reach-test1-container",
    "test2-cannot-reach-test1-across-hosts",
    "test2-cannot-reach-test1-gateway",
    "arp-seen-in-test1",
    "arp-not-seen-in-test2",
    "poststop-c1",
    "restart-c1",
    "restart-keeps-address",
    "restarted-reaches-hB",
    "ls-shows-vlan",
    "vlan-delete-in-use",
];

const MORE_CHECKS: [&str; 5] = [
    "vlan-gateway-again",
    "gateway-in-vrf",
    "vlan-delete-names-holders",
    "vlan-delete-after-release",
    "vlan-deleted",
];

#[test]
fn vlans_isolate_tenants_across_hosts_in_a_guest_with_8021q() {
    let started = Instant::now();
    let guest = Guest::build(include_str!("guest/vlan.sh"));
    let built = started.elapsed();
    // TCG is slow: the run takes about a minute and a half here.
    let limit = std::env::var("MACVLAN_GUEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let console = guest.run(Duration::from_secs(limit));
    eprintln!(
        "guest: initramfs built in {built:?}, ran in {:?}",
        started.elapsed() - built
    );
    let results = results(&console);
    let failed: Vec<String> = results
        .iter()
        .filter(|(_, pass, _)| !pass)
        .map(|(name, _, detail)| format!("{name}: {detail}"))
        .collect();
    assert!(
        failed.is_empty(),
        "failed in the guest:\n{}\n\nconsole:\n{console}",
        failed.join("\n")
    );
    for check in CHECKS.iter().chain(MORE_CHECKS.iter()) {
        assert!(
            results.iter().any(|(name, pass, _)| name == check && *pass),
            "{check} did not report PASS:\n{console}"
        );
    }
    assert!(console.contains("GUEST-DONE"), "{console}");
}
