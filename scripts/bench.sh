#!/usr/bin/env bash
# The benchmarks, with the binaries built as they ship (static, release):
#   attach/detach time of the hook vs the CNI macvlan plugin (benches/attach.rs),
#   container start through Docker vs --net none and Docker's macvlan driver (benches/docker.rs),
#   etcd: allocation throughput with 1/4/16 clients and attach time vs SQLite (benches/etcd.rs),
#   DHCP attach: the built-in client vs the CNI dhcp plugin and daemon, against dnsmasq (benches/dhcp.rs),
#   scale: 1,000 containers one after another and 32 at a time, memory (benches/scale.rs),
#   the data plane: macvlan vs bridge+veth vs a veth pair, and vs NAT and VXLAN across hosts (benches/dataplane.rs),
#   CNI ADD at cluster scale: 1,000 pods on two hosts against etcd vs CNI macvlan + host-local, a crash, a full pool (benches/cni.rs).
# Usage: scripts/bench.sh [--quick] [--out DIR]   (reports go to DIR, default bench-results/)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
dir=bench-results containers=200 dhcp=100 pinging=10 scale=1000 runs=60 allocations=400 attaches=100 seconds=10 streams=1,2,4,8,16 rounds=5 pods=1000 out=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) containers=10 dhcp=5 pinging=1 scale=40 runs=5 allocations=48 attaches=10 seconds=1 streams=1,4 rounds=2 pods=40 ;;
    --out) out=(--out "$2"); dir="$2"; shift ;;
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
cargo bench --locked --target "$RELEASE_TARGET" --bench dataplane -- --seconds "$seconds" --streams "$streams" --rounds "$rounds" "${out[@]}"
cargo bench --locked --target "$RELEASE_TARGET" --bench scale -- --containers "$scale" "${out[@]}"
cargo bench --locked --target "$RELEASE_TARGET" --bench cni -- --pods "$pods" "${out[@]}"

# One report with every part, in reading order, after what it ran on.
report="$dir/report.md"
{
  echo "# macvlan-runc evaluation"
  echo
  echo "Ran $(date -u +%Y-%m-%dT%H:%MZ) on $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM,"
  echo "$(. /etc/os-release && echo "$PRETTY_NAME"), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$([ "$containers" -lt 200 ] && echo ' — quick mode: too few samples to conclude anything')."
  echo "Every part ran in this one run, on lab namespaces of this machine; the parts follow."
  for part in dataplane attach dhcp docker etcd scale cni; do
    [ -s "$dir/$part.md" ] || continue
    echo
    sed -e 's/^\(#\+\) /#\1 /' "$dir/$part.md"   # one heading level down
  done
} > "$report"
echo "wrote $report"
