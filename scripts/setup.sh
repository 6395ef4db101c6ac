#!/usr/bin/env bash
# Installs what macvlan-runc needs to build, run and be tested on Debian 12
# (as root), then builds it. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  runc                         # the OCI runtime the hook runs under
  busybox-static               # the rootfs of lab and demo containers
  iproute2                     # lab topology and checks in tests (the product uses netlink)
  util-linux                   # nsenter, unshare, setpriv
  iperf3                       # bandwidth-limit tests and the data-plane benchmark
  dnsmasq-base                 # the lab LAN's DHCP server in the DHCP tests and benchmark (started by them, never as a service)
  radvd                        # router advertisements in the lab's gateway namespace for the SLAAC tests (started by them, never as a service)
  bind9-dnsutils               # dig, to check the DNS responder's A, AAAA, SRV and PTR answers
  openssl                      # the lab CA and certificates of the etcd TLS test
  iptables                     # NAT in the data-plane benchmark (SNAT/DNAT as Docker's port publishing)
  containernetworking-plugins  # the CNI macvlan plugin, for the benchmark comparison
  docker.io                    # dockerd 20.10 for the runtime-wrapper tests (started by the tests, never as a service)
  podman                       # podman 4.3 for the hooks.d tests
  containerd                   # containerd 1.6 and ctr, for the ctr --runc-binary test
  gcc libc6-dev pkg-config     # SQLite is compiled in (rusqlite "bundled")
  python3                      # the demo edits its config.json with it
  etcd-server etcd-client      # the cluster store: etcd 3.4, started by the tests on loopback ports
  protobuf-compiler libprotobuf-dev  # protoc and its well-known types, which the etcd client crate needs at build time
  qemu-system-x86              # a guest with Debian's kernel for the 802.1Q and ipvlan tests (this kernel has neither)
  rpm                          # rpmbuild for packaging/build-rpm.sh, rpm's queries in its test
  ca-certificates curl
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A Rust toolchain: Debian 12's own cargo is too old for the dependencies.
if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

# Debian's dynamic busybox, unpacked into lab containers that must resolve
# names (busybox-static's wget cannot: static glibc). It conflicts with
# busybox-static, so it is downloaded, not installed.
mkdir -p target/test-assets
if ! ls target/test-assets/busybox_*.deb >/dev/null 2>&1; then
  (cd target/test-assets && apt-get download busybox >/dev/null 2>&1) || {
    apt-get update -qq && (cd target/test-assets && apt-get download busybox >/dev/null)
  }
fi

# Debian's kernel for the QEMU guest of the VLAN tests (tests/vlan_guest.rs),
# downloaded, not installed: it has 802.1Q, which this machine's kernel lacks.
latest_kernel() {
  apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -1
}
if ! ls target/test-assets/linux-image-*.deb >/dev/null 2>&1; then
  kernel=$(latest_kernel)
  if [ -z "$kernel" ] || ! (cd target/test-assets && apt-get download "$kernel" >/dev/null 2>&1); then
    apt-get update -qq
    kernel=$(latest_kernel)
    (cd target/test-assets && apt-get download "$kernel" >/dev/null)
  fi
fi

# The lab needs network namespaces, macvlan, veth and bridge in the kernel.
for module in macvlan veth bridge; do modprobe -q "$module" 2>/dev/null || true; done

# Release binaries are linked statically: a hook is a process per container,
# and a static binary starts ~0.6 ms sooner here (no dynamic loader); see
# docs/bench-attach.md. `--target` keeps the flag off build scripts and proc-macros.
RELEASE_TARGET="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --bins --target "$RELEASE_TARGET"
ln -sfn "$RELEASE_TARGET/release" target/static
