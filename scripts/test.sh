#!/usr/bin/env bash
# The whole test suite: installs what it needs, then lint, unit tests and the
# integration tests on the lab (network namespaces, real runc). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo fmt --check
cargo clippy --locked --all-targets --all-features -- -D warnings
# Unit tests, then the integration tests on the lab.
set +e
cargo test --locked --features failpoints --lib --bins --tests
status=$?
set -e
# The benchmark, in a quick mode: it must keep working (numbers are not checked here).
if [ "$status" -eq 0 ]; then
  quick=$(mktemp -d)
  bash scripts/bench.sh --quick --out "$quick" >/dev/null
  test -s "$quick/report.md" && test -s "$quick/scale.md" && test -s "$quick/scale-attach.svg" \
    && test -s "$quick/attach.md" && test -s "$quick/dhcp.md" && test -s "$quick/docker.md" && test -s "$quick/etcd.md" \
    && test -s "$quick/dataplane.md" && test -s "$quick/dataplane-same-host.svg"
  rm -rf "$quick"
fi

# Every lab namespace a test made must be gone again.
leftover=$(ip netns list | awk '{print $1}' | grep -E '^mvb?[0-9]+(x[0-9]+)?-' || true)
if [ -n "$leftover" ]; then
  echo "lab namespaces left behind:"; echo "$leftover"; exit 1
fi
exit "$status"
