#!/usr/bin/env bash
# Builds the kpnode Debian package with dpkg-deb alone (no cargo-deb: installing it costs CI a
# few minutes of compiling, and the man pages and completions come from the binary anyway).
#
#   packaging/debian/build-deb.sh [--binary PATH] [--out DIR] [--version V]
#
# --binary: the kpnode to package (default: the release build, ${CARGO_TARGET_DIR:-target}/
# release/kpnode; build it with `cargo build --release -p kp-node --bin kpnode`). CI packages
# the debug binary its tests already built: the package's layout and maintainer scripts are
# what it checks, not the speed. --out: where the .deb goes (default: the current directory).
# --version: the package version (default: the binary's `kpnode --version`).
#
# The package installs /usr/bin/kpnode, the systemd unit, a man page per command, bash, zsh
# and fish completions, the Prometheus alert rules and the documentation; its postinst creates
# the `kpnode` system user and /var/lib/kpnode (0700, owned by kpnode). It does not create a
# node (that needs the participant and authority: see /usr/share/doc/kpnode/operations.md.gz)
# nor start the service.
set -euo pipefail
# Files in the package are 0644 and directories 0755 whatever the caller's umask (a strict
# 0077 would make the man pages, completions and docs unreadable to users).
umask 022

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
die() { printf 'build-deb: error: %s\n' "$*" >&2; exit 1; }

target="${CARGO_TARGET_DIR:-target}"
[[ "$target" == /* ]] || target="$ROOT/$target"
binary="$target/release/kpnode"
out="$PWD"
version=""
while (($#)); do
  case "$1" in
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --version) version="${2:?--version needs a version}"; shift 2 ;;
    *) die "unknown argument $1 (use --binary PATH, --out DIR, --version V)" ;;
  esac
done
[[ -x "$binary" ]] || die "$binary is not an executable; build it with: cargo build --release -p kp-node --bin kpnode (or pass --binary)"
command -v dpkg-deb >/dev/null || die "dpkg-deb is missing (Debian's dpkg package)"
if [[ -z "$version" ]]; then
  version="$("$binary" --version | awk '{print $2}')"
fi
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "version $version is not a Debian version"
arch="$(dpkg --print-architecture)"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
pkg="$stage/kpnode_${version}_${arch}"

install -D -m 0755 "$binary" "$pkg/usr/bin/kpnode"
# Debug information stripped, as Debian ships binaries (a debug build's line tables are
# most of its size); panics still name their source line-less location.
if command -v strip >/dev/null; then
  strip --strip-debug "$pkg/usr/bin/kpnode"
fi
install -D -m 0644 "$ROOT/packaging/systemd/kpnode.service" "$pkg/usr/lib/systemd/system/kpnode.service"

# Man pages and completions from the binary's own clap definitions.
"$binary" man --out "$stage/man" >/dev/null
install -d "$pkg/usr/share/man/man1"
for page in "$stage"/man/*.1; do
  gzip -9n <"$page" >"$pkg/usr/share/man/man1/$(basename "$page").gz"
done
install -d "$pkg/usr/share/bash-completion/completions" "$pkg/usr/share/zsh/vendor-completions" \
  "$pkg/usr/share/fish/vendor_completions.d"
"$binary" completions bash >"$pkg/usr/share/bash-completion/completions/kpnode"
"$binary" completions zsh >"$pkg/usr/share/zsh/vendor-completions/_kpnode"
"$binary" completions fish >"$pkg/usr/share/fish/vendor_completions.d/kpnode.fish"

install -D -m 0644 "$ROOT/packaging/prometheus/kpnode-alerts.yml" "$pkg/usr/share/kpnode/prometheus/kpnode-alerts.yml"
doc="$pkg/usr/share/doc/kpnode"
install -d "$doc"
for f in "$ROOT"/README.md "$ROOT"/SECURITY.md "$ROOT"/RELIABILITY.md "$ROOT"/docs/*.md; do
  gzip -9n <"$f" >"$doc/$(basename "$f").gz"
done
install -m 0644 "$ROOT/docs/certificate-example.json" "$doc/"
cat >"$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: kpnode

Files: *
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
COPYRIGHT

install -d "$pkg/DEBIAN"
installed_size="$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)"
cat >"$pkg/DEBIAN/control" <<CONTROL
Package: kpnode
Version: $version
Architecture: $arch
Maintainer: kpnode maintainers <kpnode@localhost>
Installed-Size: $installed_size
Depends: libc6 (>= 2.34), libgcc-s1, adduser
Section: net
Priority: optional
Description: Kimberley Process certificate node
 kpnode is the node a Kimberley Process participant's authority runs: it
 validates and signs the KP certificates its authority issues, delivers them
 over mutual TLS to the importing participant's node, stores signed receipts
 and import confirmations, and keeps every acknowledged message in an
 append-only, hash-chained log.
CONTROL

cat >"$pkg/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
# The service's system user and its state directory (the node directory: keys, store, token).
set -e
if [ "$1" = configure ]; then
  install -d -m 0700 /var/lib/kpnode
  if getent passwd kpnode >/dev/null; then
    # Reused only if it is a system account: never a person's login.
    uid=$(id -u kpnode)
    if [ "$uid" -ge 1000 ]; then
      echo "kpnode: an account named kpnode exists and is not a system account (uid $uid); the service must not run as it. Rename or remove that account, then run: dpkg --configure kpnode" >&2
      exit 1
    fi
  elif getent group kpnode >/dev/null; then
    adduser --system --ingroup kpnode --home /var/lib/kpnode --no-create-home \
      --shell /usr/sbin/nologin --gecos "kpnode daemon" kpnode >/dev/null
  else
    adduser --system --group --home /var/lib/kpnode --no-create-home \
      --shell /usr/sbin/nologin --gecos "kpnode daemon" kpnode >/dev/null
  fi
  chown kpnode:kpnode /var/lib/kpnode
  chmod 0700 /var/lib/kpnode
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
  fi
fi
exit 0
POSTINST

cat >"$pkg/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
# Stopped before removal; never on upgrade (the new version's postinst leaves it to the
# operator, who restarts it after reading the release notes: see "Upgrade" in operations.md).
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop kpnode.service >/dev/null 2>&1 || true
fi
exit 0
PRERM

cat >"$pkg/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
# The node directory (keys, store) is never removed, not even on purge: it holds the
# authority's signing keys and its certificate log. Remove it by hand once it is backed up.
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
POSTRM
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/prerm" "$pkg/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/kpnode_${version}_${arch}.deb"
# gzip: several times faster to build than the default xz, and read by every dpkg.
dpkg-deb --root-owner-group -Zgzip --build "$pkg" "$deb" >/dev/null
echo "$deb"
