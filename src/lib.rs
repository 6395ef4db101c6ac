//! macvlan-runc: real LAN and VLAN addresses for containers through macvlan
//! devices, set up from inside the OCI runtime lifecycle.

pub mod cidr;
pub mod cli;
pub mod cni;
pub mod config;
pub mod daemon;
pub mod dhcp;
pub mod discovery;
pub mod doctor;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod early;
pub mod failpoint;
pub mod files;
pub mod gc;
pub mod host;
pub mod ipam;
pub mod log;
pub mod metrics;
pub mod migrate;
pub mod net;
pub mod netlink;
pub mod netns;
pub mod network;
pub mod oci;
pub mod record;
pub mod request;
pub mod store;
pub mod tally;
