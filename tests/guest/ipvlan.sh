# Runs in the QEMU guest after lib.sh (Debian's kernel, which has ipvlan):
# ipvlan networks with the macvlan hook — L2 across two hosts, L3 routed by
# its host, and L2 on an 802.1Q sub-interface.
load_modules llc stp garp mrp 8021q macvlan veth bridge vrf sch_tbf ipvlan
build_lab hA hB hC
/sbin/ip -n gw addr add 192.0.2.1/24 dev lan0
# hC routes the L3 network; the LAN reaches it through hC's address (README).
/sbin/ip -n hC addr add 192.0.2.30/24 dev lan0
/sbin/ip -n gw route add 198.51.100.0/24 via 192.0.2.30
# The hosts' own addresses on the LAN (host access on ipvlan uses them).
/sbin/ip -n hA addr add 192.0.2.20/24 dev lan0
/sbin/ip -n hB addr add 192.0.2.21/24 dev lan0

# hook STAGE HOST ID PID NETWORK: a container naming NETWORK.
hook() { hook_env "$1" "$2" "$3" "$4" "\"NETWORK=$5\""; }
mac_of() { in_c "$1" cat /sys/class/net/eth0/address 2>/dev/null || in_c "$1" /sbin/ip -o link show dev eth0 | sed 's/.*link\/ether \([0-9a-f:]*\).*/\1/'; }
host_mac() { in_ns "$1" /sbin/ip -o link show dev "$2" | sed 's/.*link\/ether \([0-9a-f:]*\).*/\1/'; }

mkdir -p /etc
cat >/etc/macvlan.toml <<TOML
store = "sqlite:///tmp/state.db"
log = "/tmp/macvlan.log"
TOML

check create-l2 $MV network create l2net --driver ipvlan --mode l2 --parent lan0 --subnet 192.0.2.0/24 --gateway 192.0.2.1 --ip-range 192.0.2.64/28 --host-access
check create-l3 $MV network create l3net --driver ipvlan --mode l3 --parent lan0 --subnet 198.51.100.0/24 --host-access
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
# Host access: the host's own namespace reaches its containers, and back.
check l2-host-device sh -c "/sbin/ip -n hA -d link show mvh-l2net | grep -q 'ipvlan *mode l2'"
check l2-host-route sh -c "/sbin/ip -n hA route show dev mvh-l2net | grep -q '^192.0.2.64 '"
check l2-host-to-container in_ns hA ping -c 1 -W 2 $A1
check l2-container-to-host ping1 $C1 192.0.2.20
check l2-host-to-container-hB in_ns hB ping -c 1 -W 2 $A2

# Rates work as on macvlan: the tbf on the ipvlan, read back from the kernel.
R1=$(container hA)
check attach-rate hook_env createRuntime hA r1 $R1 '"NETWORK=l2net","RATE=1000"'
N=$($MV inspect r1 | grep -c '"rate_kbit": 1000')
[ "$N" = 2 ] && result ipvlan-rate-in-kernel PASS || result ipvlan-rate-in-kernel FAIL "$($MV inspect r1 | tr '\n' ' ')"

# L3: routed by hC, no ARP on the link, default route via the device.
check attach-c4-l3 hook createRuntime hC c4 $C4 l3net
A4=$(address_of $C4)
[ "$A4" = 198.51.100.2 ] && result l3-address PASS || result l3-address FAIL "c4=$A4"
check l3-default-route-dev sh -c "nsenter --net=/proc/$C4/ns/net /sbin/ip route show default | grep -q '^default dev eth0'"
check l3-noarp sh -c "nsenter --net=/proc/$C4/ns/net /sbin/ip link show eth0 | grep -q NOARP"
check l3-reaches-gateway-host ping1 $C4 192.0.2.1
check l3-host-to-container in_ns hC ping -c 1 -W 2 $A4
check l3-container-to-host ping1 $C4 192.0.2.30

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

# DHCP on ipvlan L2: every container has the parent's MAC, so the client
# identifies itself by a client id derived from the container id.
in_ns gw dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --user=root --group=root \
  --interface=lan0 --bind-interfaces --dhcp-range=192.0.2.100,192.0.2.150,2m \
  --dhcp-option=option:router,192.0.2.1 --dhcp-option=option:T1,3 --dhcp-option=option:T2,6 \
  --dhcp-authoritative --no-ping --log-dhcp --log-facility=/tmp/dnsmasq.log \
  --dhcp-leasefile=/tmp/dnsmasq.leases --pid-file=/tmp/dnsmasq.pid </dev/null >/dev/null 2>&1 &
sleep 1
check create-dhcp $MV network create office --driver ipvlan --mode l2 --ipam dhcp --parent lan0
D1=$(container hA); D2=$(container hA)
check attach-d1-dhcp hook createRuntime hA d1 $D1 office
check attach-d2-dhcp hook createRuntime hA d2 $D2 office
B1=$(address_of $D1); B2=$(address_of $D2)
echo "leases: d1=$B1 d2=$B2"; cat /tmp/dnsmasq.leases
case "$B1" in 192.0.2.1[0-4][0-9]|192.0.2.150) ok1=1;; *) ok1=0;; esac
[ "$ok1" = 1 ] && [ -n "$B2" ] && [ "$B1" != "$B2" ] && result dhcp-two-leases PASS || result dhcp-two-leases FAIL "d1=$B1 d2=$B2"
[ "$(mac_of $D1)" = "$HM" ] && [ "$(mac_of $D2)" = "$HM" ] && result dhcp-one-mac PASS || result dhcp-one-mac FAIL "$(mac_of $D1) $(mac_of $D2) $HM"
N=$(grep -c " $HM " /tmp/dnsmasq.leases)
[ "$N" = 2 ] && result dhcp-server-sees-two-clients-one-mac PASS || result dhcp-server-sees-two-clients-one-mac FAIL "$(cat /tmp/dnsmasq.leases | tr '\n' ' ')"
check dhcp-gateway ping1 $D1 192.0.2.1
check dhcp-between ping1 $D1 $B2
# Renewal by macvlan daemon (T1 = 3 s): the lease's expiry moves.
E1=$(grep " $B1 " /tmp/dnsmasq.leases | cut -d' ' -f1)
sleep 6
E2=$(grep " $B1 " /tmp/dnsmasq.leases | cut -d' ' -f1)
[ -n "$E1" ] && [ -n "$E2" ] && [ "$E2" -gt "$E1" ] && result dhcp-renewed PASS || result dhcp-renewed FAIL "expiry $E1 -> $E2; $(grep -c DHCPREQUEST /tmp/dnsmasq.log) requests"
# Stop: the lease is released (from a throwaway ipvlan); restart: the same address.
kill $D1
sleep 0.5
check dhcp-poststop hook poststop hA d1 0 office
sleep 0.5
grep -q " $B1 " /tmp/dnsmasq.leases && result dhcp-released FAIL "$(cat /tmp/dnsmasq.leases | tr '\n' ' ')" || result dhcp-released PASS
D1B=$(container hA)
check dhcp-restart hook createRuntime hA d1 $D1B office
B1B=$(address_of $D1B)
[ "$B1B" = "$B1" ] && result dhcp-restart-same-address PASS || result dhcp-restart-same-address FAIL "$B1 -> $B1B"
echo "== dnsmasq log"; tail -30 /tmp/dnsmasq.log

echo "== macvlan log"; cat /tmp/macvlan.log
echo GUEST-DONE
poweroff -f
