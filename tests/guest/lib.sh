#!/bin/busybox sh
# The common part of the QEMU guest scripts (tests/guest/*.sh are appended
# to it to make /init): mounts, the result helpers, a lab of namespaces —
# a switch, hosts and a gateway host gw, each with uplink lan0 —
# containers as processes in namespaces of their own, and the OCI hook as
# runc runs it. Each check prints "RESULT <check> PASS|FAIL [detail]"; the
# script ends with "GUEST-DONE". The host side reads them from the serial console.
/bin/busybox --install -s /bin
# busybox sh runs its own applets first, whatever PATH says: iproute2's ip
# (busybox's knows no netns or veth) is called as /sbin/ip.
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
# iproute2 keeps named namespaces in /var/run/netns.
mkdir -p /var && ln -s /run /var/run

MV="macvlan --config /etc/macvlan.toml"
result() { echo "RESULT $1 $2 ${3:-}"; }
# check NAME COMMAND...: PASS when the command succeeds.
check() {
  name=$1; shift
  if "$@" >/tmp/out 2>&1; then result "$name" PASS
  else result "$name" FAIL "$(tr '\n' ' ' </tmp/out | head -c 400)"; fi
}
# refuse NAME TEXT COMMAND...: PASS when the command fails saying TEXT.
refuse() {
  name=$1; text=$2; shift 2
  if "$@" >/tmp/out 2>&1; then result "$name" FAIL "succeeded: $(tr '\n' ' ' </tmp/out | head -c 300)"
  elif grep -q "$text" /tmp/out; then result "$name" PASS "$(tr '\n' ' ' </tmp/out | head -c 300)"
  else result "$name" FAIL "failed without '$text': $(tr '\n' ' ' </tmp/out | head -c 300)"; fi
}
# unreachable NAME PID ADDRESS: ping from the container runs and gets no answer.
unreachable() {
  in_c "$2" ping -c 1 -W 2 "$3" >/tmp/out 2>&1
  if grep -q "100% packet loss" /tmp/out; then result "$1" PASS
  else result "$1" FAIL "$(tr '\n' ' ' </tmp/out | head -c 300)"; fi
}
in_ns() { ns=$1; shift; nsenter "--net=/run/netns/$ns" "$@"; }
in_c() { pid=$1; shift; nsenter "--net=/proc/$pid/ns/net" "$@"; }

# load_modules M...: insmod in the order given (dependencies first).
load_modules() {
  for m in "$@"; do insmod "/modules/$m.ko" || echo "RESULT insmod-$m FAIL"; done
}

# build_lab HOST...: a switch (a VLAN-unaware bridge passes tagged frames
# through), the given hosts and a gateway host gw, each with uplink lan0.
build_lab() {
  for ns in sw gw "$@"; do /sbin/ip netns add $ns; /sbin/ip -n $ns link set lo up; done
  /sbin/ip -n sw link add br0 type bridge && /sbin/ip -n sw link set br0 up
  i=0
  for ns in "$@" gw; do
    /sbin/ip -n sw link add p$i type veth peer name lan0 netns $ns
    /sbin/ip -n sw link set p$i master br0 up
    /sbin/ip -n $ns link set lan0 up
    i=$((i+1))
  done
}

# A "container": a process with a network namespace of its own, started
# from a host's namespace. Prints its pid.
container() {
  # -F: nsenter execs unshare in place (busybox nsenter forks by default),
  # so $! is the container's process.
  nsenter -F "--net=/run/netns/$1" unshare -n sleep 100000 </dev/null >/dev/null 2>&1 &
  pid=$!
  init_ns=$(readlink /proc/self/ns/net)
  host_ns=$(in_ns "$1" readlink /proc/self/ns/net)
  for _ in $(seq 100); do
    own=$(readlink /proc/$pid/ns/net 2>/dev/null || true)
    [ -n "$own" ] && [ "$own" != "$init_ns" ] && [ "$own" != "$host_ns" ] && break
    sleep 0.05
  done
  echo $pid
}
# hook_env STAGE HOST ID PID ENV: the OCI hook, as runc runs it, for a
# container whose process.env is ENV (JSON strings, comma-separated).
hook_env() {
  stage=$1 host=$2 id=$3 pid=$4 env=$5
  mkdir -p /b/$id
  echo "{\"process\":{\"env\":[$env]},\"linux\":{\"namespaces\":[{\"type\":\"network\"}]}}" >/b/$id/config.json
  if [ "$stage" = createRuntime ]; then
    state="{\"ociVersion\":\"1.0.2\",\"id\":\"$id\",\"status\":\"creating\",\"pid\":$pid,\"bundle\":\"/b/$id\"}"
  else
    state="{\"ociVersion\":\"1.0.2\",\"id\":\"$id\",\"status\":\"stopped\",\"bundle\":\"/b/$id\"}"
  fi
  # A hook that hangs fails its check instead of the whole run.
  echo "$state" | in_ns "$host" timeout 60 $MV hook "$stage"
}
address_of() { in_c "$1" /sbin/ip -o -4 addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }
rx_packets() { in_c "$1" /sbin/ip -s -j link show dev eth0 | sed 's/.*"rx":{"bytes":[0-9]*,"packets":\([0-9]*\).*/\1/'; }
ping1() { in_c "$1" ping -c 1 -W 2 "$2"; }

