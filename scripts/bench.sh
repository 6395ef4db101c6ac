#!/usr/bin/env bash
# The benchmarks, with the binaries built as they ship (static, release):
#   attach/detach time of the hook vs the CNI macvlan plugin (benches/attach.rs),
#   container start through Docker vs --net none and Docker's macvlan driver (benches/docker.rs),
#   etcd: allocation throughput with 1/4/16 clients and attach time vs SQLite (benches/etcd.rs),
#   DHCP attach: the built-in client vs the CNI dhcp plugin and daemon, against dnsmasq (benches/dhcp.rs),
#   the data plane: macvlan vs bridge+veth vs a veth pair, and vs NAT and VXLAN across hosts (benches/dataplane.rs).
# Usage: scripts/bench.sh [--quick] [--out DIR]   (reports go to DIR, default bench-results/)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
containers=200 dhcp=100 pinging=10 runs=60 allocations=400 attaches=100 seconds=10 streams=1,2,4,8,16 out=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) containers=10 dhcp=5 pinging=1 runs=5 allocations=48 attaches=10 seconds=1 streams=1,4 ;;
    --out) out=(--out "$2"); shift ;;
    *) echo "usage: scripts/bench.sh [--quick] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
RELEASE_TARGET="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-C target-feature=+crt-static"
cargo bench --locked --target "$RELEASE_TARGET" --bench attach -- --containers "$containers" "${out[@]}"
cargo bench --locked --target "$RELEASE_TARGET" --bench dhcp -- --containers "$dhcp" --pinging "$pinging" "${out[@]}"
cargo bench --locked --target "$RELEASE_TARGET" --bench docker -- --runs "$runs" "${out[@]}"
cargo bench --locked --target "$RELEASE_TARGET" --bench etcd -- --allocations "$allocations" --attaches "$attaches" "${out[@]}"
cargo bench --locked --target "$RELEASE_TARGET" --bench dataplane -- --seconds "$seconds" --streams "$streams" "${out[@]}"
