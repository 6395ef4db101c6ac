#!/usr/bin/env bash
# The main job, on a small lab that never touches this machine's own network:
# a "LAN" switch with a gateway and a host, each in a network namespace of its
# own; runc (inside the host's namespace) starts a busybox container whose
# createRuntime hook gives it a macvlan of the host's uplink with a real LAN
# address, then the container pings the gateway across the LAN.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

BIN="$PWD/target/static/macvlan"
LAB="demo$$"
WORK="$(mktemp -d /tmp/macvlan-demo.XXXXXX)"
RUNC=(nsenter "--net=/run/netns/$LAB-host" runc --root "$WORK/runc")

cleanup() {
  "${RUNC[@]}" delete --force web >/dev/null 2>&1 || true
  for ns in host gw sw; do ip netns del "$LAB-$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== lab: switch, gateway 192.0.2.1, host with uplink lan0"
for ns in sw host gw; do ip netns add "$LAB-$ns"; ip -n "$LAB-$ns" link set lo up; done
ip -n "$LAB-sw" link add br0 type bridge && ip -n "$LAB-sw" link set br0 up
for node in host gw; do
  ip -n "$LAB-sw" link add "p-$node" type veth peer name lan0 netns "$LAB-$node"
  ip -n "$LAB-sw" link set "p-$node" master br0 up
  ip -n "$LAB-$node" link set lan0 up
done
ip -n "$LAB-gw" addr add 192.0.2.1/24 dev lan0

echo "== bundle: busybox-static rootfs, our hooks, TYPE=flat HOSTIF=lan0 IP=192.0.2.10/24 GW=192.0.2.1"
mkdir -p "$WORK/bundle/rootfs/bin" "$WORK/bundle/rootfs"/{proc,sys,dev,tmp}
cp /bin/busybox "$WORK/bundle/rootfs/bin/"
for applet in sh ip ping sleep; do ln -s busybox "$WORK/bundle/rootfs/bin/$applet"; done
cat > "$WORK/config.toml" <<TOML
store = "sqlite://$WORK/state.db"
log = "$WORK/macvlan.log"
TOML
(cd "$WORK/bundle" && runc spec)
python3 - "$WORK" "$BIN" <<'PY'
import json, sys
work, binary = sys.argv[1], sys.argv[2]
path = f"{work}/bundle/config.json"
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["sleep", "3600"]
c["process"]["env"] += ["TYPE=flat", "HOSTIF=lan0", "IP=192.0.2.10/24", "GW=192.0.2.1"]
for s in ("bounding", "effective", "permitted"):
    c["process"]["capabilities"][s].append("CAP_NET_RAW")
cfg = f"{work}/config.toml"
c["hooks"] = {
    "createRuntime": [{"path": binary, "args": ["macvlan", "--config", cfg, "hook", "createRuntime"]}],
    "poststop": [{"path": binary, "args": ["macvlan", "--config", cfg, "hook", "poststop"]}],
}
json.dump(c, open(path, "w"), indent=2)
PY

echo "== runc create + start (inside the lab host's namespace)"
"${RUNC[@]}" create --bundle "$WORK/bundle" web </dev/null >"$WORK/web.out" 2>&1
"${RUNC[@]}" start web
echo "== the container's interfaces and routes"
"${RUNC[@]}" exec web ip addr show eth0
"${RUNC[@]}" exec web ip route
echo "== ping the LAN gateway from the container"
"${RUNC[@]}" exec web ping -c 3 192.0.2.1
echo "== the store (macvlan ls) and the hook's log"
"$BIN" --config "$WORK/config.toml" ls
cat "$WORK/macvlan.log"
echo "== stop: poststop keeps the address reserved for a restart"
"${RUNC[@]}" delete --force web
"$BIN" --config "$WORK/config.toml" ls
echo "demo: ok"
