#!/usr/bin/env bash
# The main job, on a small lab that never touches this machine's own network:
# a "LAN" switch with a gateway and a host, each in a network namespace of its
# own; runc (inside the host's namespace) starts a busybox container whose
# createRuntime hook gives it a macvlan of the host's uplink with a real LAN
# address, then the container pings the gateway across the LAN. Then service
# discovery: a "webapp" container registered by name (DISCOVER=true), found
# with `macvlan lookup` and by DNS from the other container.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

BIN="$PWD/target/static/macvlan"
LAB="demo$$"
WORK="$(mktemp -d /tmp/macvlan-demo.XXXXXX)"
RUNC=(nsenter "--net=/run/netns/$LAB-host" runc --root "$WORK/runc")

cleanup() {
  "${RUNC[@]}" delete --force webapp >/dev/null 2>&1 || true
  "${RUNC[@]}" delete --force web >/dev/null 2>&1 || true
  [ -n "${DNS_PID:-}" ] && kill "$DNS_PID" 2>/dev/null || true
  [ -s "$WORK/run/daemon.pid" ] && kill "$(cat "$WORK/run/daemon.pid")" 2>/dev/null || true
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

echo "== bundle: busybox-static rootfs, our hooks, NETWORK=lan (an address from the network's range)"
mkdir -p "$WORK/bundle/rootfs/bin" "$WORK/bundle/rootfs"/{proc,sys,dev,tmp}
cp /bin/busybox "$WORK/bundle/rootfs/bin/"
for applet in sh ip ping sleep httpd nslookup; do ln -s busybox "$WORK/bundle/rootfs/bin/$applet"; done
mkdir -p "$WORK/bundle/rootfs/www" && echo "hello from webapp" > "$WORK/bundle/rootfs/www/index.html"
cat > "$WORK/config.toml" <<TOML
store = "sqlite://$WORK/state.db"
log = "$WORK/macvlan.log"
[daemon]
runtime_dir = "$WORK/run"
[discovery]
ttl = "3s"
TOML
(cd "$WORK/bundle" && runc spec)
mkdir -p "$WORK/webapp"
python3 - "$WORK" "$BIN" <<'PY'
import json, sys
work, binary = sys.argv[1], sys.argv[2]
spec = json.load(open(f"{work}/bundle/config.json"))
cfg = f"{work}/config.toml"
# Two bundles on one rootfs: "web" (a plain container) and "webapp" (an HTTP
# server registered for discovery).
for name, args, env in (
    ("bundle", ["sleep", "3600"], []),
    ("webapp", ["sh", "-c", "httpd -p 8000 -h /www; exec sleep 3600"],
     ["IP=192.0.2.20", "DISCOVER=true", "PORT=8000", "SERVICE=webapp"]),
):
    c = json.loads(json.dumps(spec))
    c["root"] = {"path": f"{work}/bundle/rootfs", "readonly": True}
    c["process"]["terminal"] = False
    c["process"]["args"] = args
    c["process"]["env"] += ["NETWORK=lan"] + env
    for s in ("bounding", "effective", "permitted"):
        c["process"]["capabilities"][s].append("CAP_NET_RAW")
    c["hooks"] = {
        "createRuntime": [{"path": binary, "args": ["macvlan", "--config", cfg, "hook", "createRuntime"]}],
        "poststop": [{"path": binary, "args": ["macvlan", "--config", cfg, "hook", "poststop"]}],
    }
    json.dump(c, open(f"{work}/{name}/config.json", "w"), indent=2)
PY

echo "== the operator defines the network; containers name it (NETWORK=lan)"
"$BIN" --config "$WORK/config.toml" network create lan --parent lan0 --subnet 192.0.2.0/24 --gateway 192.0.2.1 --ip-range 192.0.2.0/26
"$BIN" --config "$WORK/config.toml" network ls

echo "== runc create + start (inside the lab host's namespace)"
"${RUNC[@]}" create --bundle "$WORK/bundle" web </dev/null >"$WORK/web.out" 2>&1
"${RUNC[@]}" start web
echo "== the container's interfaces and routes"
"${RUNC[@]}" exec web ip addr show eth0
"${RUNC[@]}" exec web ip route
echo "== ping the LAN gateway from the container"
"${RUNC[@]}" exec web ping -c 3 192.0.2.1
echo "== the store (macvlan ls)"
"$BIN" --config "$WORK/config.toml" ls

echo "== service discovery: webapp (DISCOVER=true PORT=8000 SERVICE=webapp)"
"${RUNC[@]}" create --bundle "$WORK/webapp" webapp </dev/null >"$WORK/webapp.out" 2>&1
"${RUNC[@]}" start webapp
# The hook started the registrar (macvlan daemon); it publishes the service
# once its port answers a TCP connect from inside the container.
for _ in $(seq 50); do
  nsenter "--net=/run/netns/$LAB-host" "$BIN" --config "$WORK/config.toml" lookup webapp 2>/dev/null && break
  sleep 0.2
done
echo "== a DNS responder in the gateway's namespace answers webapp.lab from the store"
nsenter "--net=/run/netns/$LAB-gw" "$BIN" --config "$WORK/config.toml" dns --listen 192.0.2.1:53 --domain lab &
DNS_PID=$!
sleep 0.5
"${RUNC[@]}" exec web nslookup webapp.lab 192.0.2.1
"${RUNC[@]}" exec web nslookup -type=srv webapp.lab 192.0.2.1
echo "== stop webapp: its name is withdrawn at once"
"${RUNC[@]}" delete --force webapp
nsenter "--net=/run/netns/$LAB-host" "$BIN" --config "$WORK/config.toml" lookup webapp || true

echo "== stop: poststop keeps the address reserved for a restart"
"${RUNC[@]}" delete --force web
"$BIN" --config "$WORK/config.toml" ls
"$BIN" --config "$WORK/config.toml" network inspect lan
cat "$WORK/macvlan.log"
echo "demo: ok"
