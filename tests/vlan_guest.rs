//! VLAN networks on a kernel with 802.1Q: a QEMU guest (this machine's
//! kernel has none) runs tests/guest/vlan.sh, a lab of namespaces with two
//! hosts, a gateway host and containers on VLANs test1 and test2, all
//! attached by the hook with an OCI state JSON.

mod common;

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
    let checks: Vec<&str> = CHECKS.iter().chain(MORE_CHECKS.iter()).copied().collect();
    common::guest::run_checks(include_str!("guest/vlan.sh"), &checks);
}
