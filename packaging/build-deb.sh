#!/usr/bin/env bash
# Builds target/debian/macvlan-runc_<version>_<arch>.deb with dpkg-deb from
# the release binaries (scripts/setup.sh builds them) and the files in this
# directory. Usage: packaging/build-deb.sh [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/debian}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
arch="$(dpkg --print-architecture)"
bin="target/static"
[ -x "$bin/macvlan" ] && [ -x "$bin/macvlan-runc" ] || { echo "build-deb: run scripts/setup.sh first (no $bin/macvlan)" >&2; exit 1; }

stage="$(mktemp -d)"
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT
bash packaging/stage.sh "$stage" /lib/systemd/system
doc="$stage/usr/share/doc/macvlan-runc"
cat > "$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: macvlan-runc
License: Apache-2.0
COPYRIGHT

install -d "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: macvlan-runc
Version: $version
Architecture: $arch
Maintainer: macvlan-runc developers <root@localhost>
Depends: runc
Recommends: iproute2
Section: admin
Priority: optional
Installed-Size: $(du -sk "$stage" | cut -f1)
Description: real LAN and VLAN addresses for containers through macvlan
 An OCI hook (macvlan) and a runc-compatible runtime (macvlan-runc) that give
 containers started by runc, dockerd, podman or CRI-O an address on the host's
 LAN through a macvlan device, without NAT or a proxy, with their records kept
 in an embedded store.
CONTROL
cat > "$stage/DEBIAN/conffiles" <<CONFFILES
/etc/macvlan-runc/config.toml
/etc/logrotate.d/macvlan-runc
CONFFILES
cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
  systemctl enable --now macvlan-gc.timer || true
  systemctl enable --now macvlan-daemon.service || true
fi
POSTINST
cat > "$stage/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl disable --now macvlan-gc.timer || true
  systemctl disable --now macvlan-daemon.service macvlan-dns.service || true
fi
PRERM
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm"

mkdir -p "$out"
package="$out/macvlan-runc_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$package" >/dev/null
echo "$package"
