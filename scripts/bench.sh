#!/usr/bin/env bash
# The attach/detach benchmark against the CNI macvlan plugin, with the hook
# built as it ships (static, release). Arguments go to the benchmark:
#   --containers N (default 200)   --out DIR (default bench-results/)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
RELEASE_TARGET="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="-C target-feature=+crt-static" cargo bench --locked --target "$RELEASE_TARGET" --bench attach -- "$@"
