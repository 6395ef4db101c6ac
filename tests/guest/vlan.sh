# Runs in the QEMU guest after lib.sh (Debian's kernel, which has 802.1Q):
# puts containers on two VLANs with the macvlan hook.
load_modules llc stp garp mrp 8021q macvlan veth bridge vrf
build_lab hA hB

# hook STAGE HOST ID PID VLAN [IP]: a container asking for VLAN network VLAN.
hook() {
  env="\"TYPE=vlan\",\"VLAN=$5\""
  [ -n "${6:-}" ] && env="$env,\"IP=$6\""
  hook_env "$1" "$2" "$3" "$4" "$env"
}
mkdir -p /etc
cat >/etc/macvlan.toml <<TOML
store = "sqlite:///tmp/state.db"
log = "/tmp/macvlan.log"
TOML

check vlan-create-test1 $MV vlan create --name test1 --subnet 198.18.1.0/24 --host-interface lan0 --id 101
check vlan-create-test2 $MV vlan create --name test2 --subnet 198.18.2.0/24 --host-interface lan0
refuse vlan-overlap-refused "overlaps network" $MV vlan create --name test3 --subnet 198.18.1.128/25 --host-interface lan0
ID2=$($MV vlan inspect test2 | sed -n 's/.*"id": \([0-9]*\).*/\1/p')
check vlan-gateway-test1 in_ns gw $MV vlan gateway test1
check vlan-gateway-test2 in_ns gw $MV vlan gateway test2
check vlan-gateway-again in_ns gw $MV vlan gateway test1
check gateway-in-vrf sh -c "/sbin/ip -n gw -d link show vgw101 | grep -q 'vrf_slave'"

echo "starting containers"
C1=$(container hA); C3=$(container hA); C4=$(container hA)
C2=$(container hB); C6=$(container hB)
echo "containers: $C1 $C3 $C4 $C2 $C6"
check attach-c1 hook createRuntime hA c1 $C1 test1
check attach-c3-test2 hook createRuntime hA c3 $C3 test2
check attach-c4-requested hook createRuntime hA c4 $C4 test1 198.18.1.50
# Two hooks race to create hB's lan0.101.
hook createRuntime hB c2 $C2 test1 >/tmp/c2.out 2>&1 & R2=$!
hook createRuntime hB c6 $C6 test1 >/tmp/c6.out 2>&1 & R6=$!
wait $R2; S2=$?; wait $R6; S6=$?
if [ $S2 = 0 ] && [ $S6 = 0 ]; then result attach-race-hB PASS
else result attach-race-hB FAIL "$(cat /tmp/c2.out /tmp/c6.out | tr '\n' ' ')"; fi

A1=$(address_of $C1); A2=$(address_of $C2); A3=$(address_of $C3); A4=$(address_of $C4); A6=$(address_of $C6)
echo "addresses: c1=$A1 c2=$A2 c3=$A3 c4=$A4 c6=$A6"
[ "$A1" = 198.18.1.2 ] && result lowest-free-address PASS || result lowest-free-address FAIL "c1=$A1"
[ "$A4" = 198.18.1.50 ] && result requested-address PASS || result requested-address FAIL "c4=$A4"
[ "$A3" = 198.18.2.2 ] && result test2-address PASS || result test2-address FAIL "c3=$A3"
[ -n "$A2" ] && [ -n "$A6" ] && [ "$A2" != "$A6" ] && [ "$A2" != "$A1" ] && [ "$A6" != "$A4" ] \
  && result distinct-addresses PASS || result distinct-addresses FAIL "c2=$A2 c6=$A6"
N=$(in_ns hB /sbin/ip -o link show type vlan | grep -c 'lan0.101@')
[ "$N" = 1 ] && result one-sub-interface-per-host PASS || result one-sub-interface-per-host FAIL "$N"
check sub-interfaces-hA in_ns hA /sbin/ip -d link show lan0.101
check sub-interface-test2-hA in_ns hA /sbin/ip -d link show lan0.$ID2

check test1-same-vlan-across-hosts ping1 $C1 $A2
check test1-across-hosts-back ping1 $C2 $A1
check test1-second-container-hB ping1 $C1 $A6
check test1-same-host ping1 $C4 $A1
check test1-gateway-from-hA ping1 $C1 198.18.1.1
check test1-gateway-from-hB ping1 $C2 198.18.1.1
check test2-own-gateway ping1 $C3 198.18.2.1
unreachable test2-cannot-reach-test1-container $C3 $A1
unreachable test2-cannot-reach-test1-across-hosts $C3 $A2
unreachable test2-cannot-reach-test1-gateway $C3 198.18.1.1

# Broadcasts: ARP requests from c1 (test1) reach c2 (test1), not c3 (test2).
before3=$(rx_packets $C3); before2=$(rx_packets $C2)
in_c $C1 arping -c 3 -w 6 -I eth0 198.18.1.99 >/dev/null 2>&1
after3=$(rx_packets $C3); after2=$(rx_packets $C2)
echo "rx c2 $before2 -> $after2, c3 $before3 -> $after3"
[ $((after2 - before2)) -ge 3 ] && result arp-seen-in-test1 PASS || result arp-seen-in-test1 FAIL "c2 rx $before2 -> $after2"
[ -n "$before3" ] && [ "$after3" = "$before3" ] && result arp-not-seen-in-test2 PASS || result arp-not-seen-in-test2 FAIL "c3 rx $before3 -> $after3"

# Restart: poststop, a new process under the same id, the same address.
check poststop-c1 hook poststop hA c1 0 test1
kill $C1
C1B=$(container hA)
check restart-c1 hook createRuntime hA c1 $C1B test1
A1B=$(address_of $C1B)
[ -n "$A1" ] && [ "$A1B" = "$A1" ] && result restart-keeps-address PASS || result restart-keeps-address FAIL "$A1 -> $A1B"
check restarted-reaches-hB ping1 $C1B $A2
check ls-shows-vlan sh -c "$MV ls | grep -q '^c1 *vlan *running *198.18.1.2/24'"

refuse vlan-delete-in-use "is in use by" $MV vlan delete test1
grep -q 'c1 (198.18.1.2)' /tmp/out && grep -q 'c2 (' /tmp/out && result vlan-delete-names-holders PASS || result vlan-delete-names-holders FAIL "$(cat /tmp/out)"
for c in c1 c2 c4 c6; do $MV detach --id $c >/dev/null 2>&1 || echo "detach $c failed"; done
check vlan-delete-after-release $MV vlan delete test1
refuse vlan-deleted 'no network "test1"' $MV vlan inspect test1

echo "== macvlan log"; cat /tmp/macvlan.log
echo GUEST-DONE
poweroff -f
