#!/usr/bin/env bash
# Builds target/rpm/macvlan-runc-<version>-1.<arch>.rpm with rpmbuild (Debian's
# `rpm` package has it) from the files packaging/stage.sh lays out — the same
# as the .deb, with the systemd units in /usr/lib/systemd/system as Fedora and
# RHEL keep them. Usage: packaging/build-rpm.sh [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-target/rpm}")"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
arch="$(uname -m)"
command -v rpmbuild >/dev/null || { echo "build-rpm: install rpmbuild (Debian: apt-get install rpm)" >&2; exit 1; }

top="$(mktemp -d)"
trap 'rm -rf "$top"' EXIT
stage="$top/stage"
mkdir -p "$stage" "$top/SPECS" "$top/RPMS" "$out"
bash packaging/stage.sh "$stage" /usr/lib/systemd/system

cat > "$top/SPECS/macvlan-runc.spec" <<SPEC
Name:           macvlan-runc
Version:        $version
Release:        1
Summary:        Real LAN and VLAN addresses for containers through macvlan
License:        Apache-2.0
BuildArch:      $arch
Requires:       runc
# Prebuilt, statically linked binaries: nothing to strip or scan.
%global debug_package %{nil}
%global __os_install_post %{nil}
%global _build_id_links none

%description
An OCI hook (macvlan) and a runc-compatible runtime (macvlan-runc) that give
containers started by runc, dockerd, podman or CRI-O an address on the host's
LAN (or an 802.1Q VLAN) through a macvlan or ipvlan device, without NAT or a
proxy, with their records kept in an embedded store or etcd.

%install
cp -a "$stage/." %{buildroot}/

%files
/usr/bin/macvlan
/usr/bin/macvlan-runc
/usr/lib/cni/macvlan-runc
%dir /etc/macvlan-runc
%config(noreplace) /etc/macvlan-runc/config.toml
%config(noreplace) /etc/logrotate.d/macvlan-runc
/usr/share/containers/oci/hooks.d/macvlan.json
/usr/lib/systemd/system/macvlan-gc.service
/usr/lib/systemd/system/macvlan-gc.timer
/usr/lib/systemd/system/macvlan-daemon.service
/usr/lib/systemd/system/macvlan-dns.service
/usr/share/man/man1/*.1.gz
/usr/share/bash-completion/completions/macvlan
/usr/share/zsh/vendor-completions/_macvlan
/usr/share/fish/vendor_completions.d/macvlan.fish
%doc /usr/share/doc/macvlan-runc
%dir /var/lib/macvlan-runc

%post
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || :
  systemctl enable --now macvlan-gc.timer || :
  systemctl enable --now macvlan-daemon.service || :
fi

%preun
if [ \$1 -eq 0 ] && [ -d /run/systemd/system ]; then
  systemctl disable --now macvlan-gc.timer || :
  systemctl disable --now macvlan-daemon.service macvlan-dns.service || :
fi

%postun
if [ -d /run/systemd/system ]; then systemctl daemon-reload || :; fi
SPEC

rpmbuild --quiet -bb --define "_topdir $top" --define "_rpmdir $top/RPMS" \
  "$top/SPECS/macvlan-runc.spec" >/dev/null
package="$(find "$top/RPMS" -name '*.rpm' | head -1)"
cp "$package" "$out/"
echo "$out/$(basename "$package")"
