//! ipvlan networks on a kernel with ipvlan: a QEMU guest (this machine's
//! kernel has none) runs tests/guest/ipvlan.sh — L2 containers on two hosts
//! sharing their parent's MAC, an L3 network routed by its host, L2 on an
//! 802.1Q sub-interface, a restart, and DHCP on L2 against dnsmasq (two
//! containers with one MAC, two leases, renewed, released, kept) — all
//! attached by the hook.

mod common;

/// Every check the guest script makes; each must report PASS.
const CHECKS: [&str; 48] = [
    "create-l2",
    "create-l3",
    "create-vlan10",
    "gateway-vlan10",
    "attach-c1",
    "attach-c2",
    "attach-c3",
    "l2-addresses",
    "l2-shares-parent-mac",
    "l2-kind",
    "l2-gateway",
    "l2-across-hosts",
    "l2-across-hosts-back",
    "l2-same-host",
    "l2-host-device",
    "l2-host-route",
    "l2-host-to-container",
    "l2-container-to-host",
    "l2-host-to-container-hB",
    "attach-rate",
    "ipvlan-rate-in-kernel",
    "attach-c4-l3",
    "l3-address",
    "l3-default-route-dev",
    "l3-noarp",
    "l3-reaches-gateway-host",
    "l3-host-to-container",
    "l3-container-to-host",
    "attach-c5-vlan10",
    "vlan10-sub-interface",
    "vlan10-gateway",
    "poststop-c1",
    "restart-c1",
    "restart-keeps-address",
    "restarted-reaches-hB",
    "create-dhcp",
    "attach-d1-dhcp",
    "attach-d2-dhcp",
    "dhcp-two-leases",
    "dhcp-one-mac",
    "dhcp-server-sees-two-clients-one-mac",
    "dhcp-gateway",
    "dhcp-between",
    "dhcp-renewed",
    "dhcp-poststop",
    "dhcp-released",
    "dhcp-restart",
    "dhcp-restart-same-address",
];

#[test]
fn ipvlan_l2_l3_and_on_a_vlan_in_a_guest_with_ipvlan() {
    common::guest::run_checks(include_str!("guest/ipvlan.sh"), &CHECKS);
}
