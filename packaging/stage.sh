#!/usr/bin/env bash
# Lays out every file macvlan-runc installs under STAGE (a package's root),
# from the release binaries (scripts/setup.sh builds them) and the files in
# this repository; packaging/build-deb.sh and build-rpm.sh package it.
# Usage: packaging/stage.sh STAGE UNIT_DIR (where systemd units go:
# /lib/systemd/system on Debian, /usr/lib/systemd/system on Fedora/RHEL).
set -euo pipefail
cd "$(dirname "$0")/.."
stage="$1"
units="$2"
bin="target/static"
[ -x "$bin/macvlan" ] && [ -x "$bin/macvlan-runc" ] || { echo "stage: run scripts/setup.sh first (no $bin/macvlan)" >&2; exit 1; }
install -D -m 0755 "$bin/macvlan"                    "$stage/usr/bin/macvlan"
install -D -m 0755 "$bin/macvlan-runc"               "$stage/usr/bin/macvlan-runc"
# The CNI plugin is the same binary (it acts as one when CNI_COMMAND is set).
install -d "$stage/usr/lib/cni"
ln -sf ../../bin/macvlan "$stage/usr/lib/cni/macvlan-runc"
install -D -m 0644 config/config.toml                "$stage/etc/macvlan-runc/config.toml"
install -D -m 0644 hooks/macvlan.json                "$stage/usr/share/containers/oci/hooks.d/macvlan.json"
install -D -m 0644 packaging/systemd/macvlan-gc.service "$stage$units/macvlan-gc.service"
install -D -m 0644 packaging/systemd/macvlan-gc.timer   "$stage$units/macvlan-gc.timer"
install -D -m 0644 packaging/systemd/macvlan-daemon.service "$stage$units/macvlan-daemon.service"
install -D -m 0644 packaging/systemd/macvlan-dns.service "$stage$units/macvlan-dns.service"
install -D -m 0644 packaging/logrotate.conf          "$stage/etc/logrotate.d/macvlan-runc"
doc="$stage/usr/share/doc/macvlan-runc"
install -D -m 0644 README.md                         "$doc/README.md"
install -D -m 0644 packaging/runc-hooks.json         "$doc/examples/runc-hooks.json"
for f in packaging/engines/*; do install -D -m 0644 "$f" "$doc/examples/$(basename "$f")"; done
install -d "$stage/var/lib/macvlan-runc"
# Manual pages and shell completions, generated from the CLI definition.
man="$(mktemp -d)"
"$bin/macvlan" man "$man"
install -d "$stage/usr/share/man/man1"
for page in "$man"/*.1; do gzip -9n -c "$page" > "$stage/usr/share/man/man1/$(basename "$page").gz"; done
rm -rf "$man"
chmod 0644 "$stage"/usr/share/man/man1/*.gz
install -d "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
  "$stage/usr/share/fish/vendor_completions.d"
"$bin/macvlan" completions bash > "$stage/usr/share/bash-completion/completions/macvlan"
"$bin/macvlan" completions zsh > "$stage/usr/share/zsh/vendor-completions/_macvlan"
"$bin/macvlan" completions fish > "$stage/usr/share/fish/vendor_completions.d/macvlan.fish"
chmod 0644 "$stage/usr/share/bash-completion/completions/macvlan" \
  "$stage/usr/share/zsh/vendor-completions/_macvlan" "$stage/usr/share/fish/vendor_completions.d/macvlan.fish"

