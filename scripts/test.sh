#!/usr/bin/env bash
# The whole test suite: installs what it needs, then lint, unit tests and the
# integration tests on the lab (network namespaces, real runc). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets 2>&1 | tee /tmp/macvlan-test.$$.log
status=${PIPESTATUS[0]}

# Every lab namespace a test made must be gone again.
leftover=$(ip netns list | awk '{print $1}' | grep -E '^mv[0-9]+x[0-9]+-' || true)
if [ -n "$leftover" ]; then
  echo "lab namespaces left behind:"; echo "$leftover"; exit 1
fi
rm -f /tmp/macvlan-test.$$.log
exit "$status"
