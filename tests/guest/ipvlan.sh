# Runs in the QEMU guest after lib.sh (Debian's kernel, which has ipvlan):
# ipvlan networks with the macvlan hook — L2 across two hosts, L3 routed by
# its host, and L2 on an 802.1Q sub-interface.
load_modules llc stp garp mrp 8021q macvlan veth bridge vrf ipvlan
build_lab hA hB hC
/sbin/ip -n gw addr add 192.0.2.1/24 dev lan0
# hC routes the L3 network; the LAN reaches it through hC's address (README).
/sbin/ip -n hC addr add 192.0.2.30/24 dev lan0
/sbin/ip -n gw route add 198.51.100.0/24 via 192.0.2.30

# hook STAGE HOST ID PID NETWORK: a container naming NETWORK.
hook() { hook_env "$1" "$2" "$3" "$4" "\"NETWORK=$5\""; }
mac_of() { in_c "$1" cat /sys/class/net/eth0/address 2>/dev/null || in_c "$1" /sbin/ip -o link show dev eth0 | sed 's/.*link\/ether \([0-9a-f:]*\).*/\1/'; }
host_mac() { in_ns "$1" /sbin/ip -o link show dev "$2" | sed 's/.*link\/ether \([0-9a-f:]*\).*/\1/'; }

mkdir -p /etc
cat >/etc/macvlan.toml <<TOML
store = "sqlite:///tmp/state.db"
log = "/tmp/macvlan.log"
TOML

check create-l2 $MV network create l2net --driver ipvlan --mode l2 --parent lan0 --subnet 192.0.2.0/24 --gateway 192.0.2.1 --ip-range 192.0.2.64/28
check create-l3 $MV network create l3net --driver ipvlan --mode l3 --parent lan0 --subnet 198.51.100.0/24
check create-vlan10 $MV network create v10 --driver ipvlan --mode l2 --parent lan0 --vlan 10 --subnet 203.0.113.0/24 --gateway 203.0.113.1
check gateway-vlan10 in_ns gw $MV vlan gateway v10

C1=$(container hA); C3=$(container hA); C2=$(container hB); C4=$(container hC); C5=$(container hB)
check attach-c1 hook createRuntime hA c1 $C1 l2net
check attach-c2 hook createRuntime hB c2 $C2 l2net
check attach-c3 hook createRuntime hA c3 $C3 l2net
A1=$(address_of $C1); A2=$(address_of $C2); A3=$(address_of $C3)
echo "addresses: c1=$A1 c2=$A2 c3=$A3"
[ "$A1" = 192.0.2.64 ] && [ "$A2" = 192.0.2.65 ] && [ "$A3" = 192.0.2.66 ] \
  && result l2-addresses PASS || result l2-addresses FAIL "c1=$A1 c2=$A2 c3=$A3"
M1=$(mac_of $C1); M3=$(mac_of $C3); HM=$(host_mac hA lan0)
[ -n "$M1" ] && [ "$M1" = "$HM" ] && [ "$M3" = "$HM" ] && result l2-shares-parent-mac PASS \
  || result l2-shares-parent-mac FAIL "c1=$M1 c3=$M3 hA=$HM"
check l2-kind sh -c "nsenter --net=/proc/$C1/ns/net /sbin/ip -d link show eth0 | grep -q 'ipvlan *mode l2 bridge'"
check l2-gateway ping1 $C1 192.0.2.1
check l2-across-hosts ping1 $C1 $A2
check l2-across-hosts-back ping1 $C2 $A1
check l2-same-host ping1 $C3 $A1

# L3: routed by hC, no ARP on the link, default route via the device.
check attach-c4-l3 hook createRuntime hC c4 $C4 l3net
A4=$(address_of $C4)
[ "$A4" = 198.51.100.2 ] && result l3-address PASS || result l3-address FAIL "c4=$A4"
check l3-default-route-dev sh -c "nsenter --net=/proc/$C4/ns/net /sbin/ip route show default | grep -q '^default dev eth0'"
check l3-noarp sh -c "nsenter --net=/proc/$C4/ns/net /sbin/ip link show eth0 | grep -q NOARP"
check l3-reaches-gateway-host ping1 $C4 192.0.2.1

# L2 ipvlan on a VLAN sub-interface (hB's lan0 already carries L2 slaves).
check attach-c5-vlan10 hook createRuntime hB c5 $C5 v10
check vlan10-sub-interface in_ns hB /sbin/ip -d link show lan0.10
check vlan10-gateway ping1 $C5 203.0.113.1

# Restart keeps the address.
check poststop-c1 hook poststop hA c1 0 l2net
kill $C1
C1B=$(container hA)
check restart-c1 hook createRuntime hA c1 $C1B l2net
A1B=$(address_of $C1B)
[ "$A1B" = "$A1" ] && result restart-keeps-address PASS || result restart-keeps-address FAIL "$A1 -> $A1B"
check restarted-reaches-hB ping1 $C1B $A2

echo "== macvlan log"; cat /tmp/macvlan.log
echo GUEST-DONE
poweroff -f
