#!/usr/bin/env bash
# A real Debian root for the demo: debootstrap (minbase) of this machine's
# own release from the mirror its apt sources name, with the packages that
# make fidelity a real test: file capabilities (iputils-ping: cap_net_raw on
# /usr/bin/ping, libcap2-bin: getcap) and setuid programs (passwd, mount).
# Built once and cached as a tarball (xattrs kept); later runs unpack it.
#
# Usage (as root): scripts/debian-root.sh DEST
# Cache: ${CROSSBACK_CACHE:-/var/cache/crossback}/debian-SUITE.tar
set -euo pipefail
dest=${1:?usage: debian-root.sh DEST}
cache=${CROSSBACK_CACHE:-/var/cache/crossback}
suite=${SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}
packages=iputils-ping,libcap2-bin,passwd,mount
say() { echo "debian-root: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap makes device nodes and sets owners)"
tarball=$cache/debian-$suite.tar

if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || die "debootstrap is not installed (scripts/install-deps.sh installs it)"
  m=$("$(dirname "$0")/apt-mirror.sh")
  [ -n "$m" ] || die "no Debian mirror in /etc/apt/sources.list*: set MIRROR=http://…/debian"
  say "building a Debian $suite root from $m (once; cached in $tarball)"
  mkdir -p "$cache"
  build=$(mktemp -d "$cache/build.XXXXXX")
  trap 'rm -rf --one-file-system "$build"' EXIT
  if ! debootstrap --variant=minbase --include="$packages" "$suite" "$build/root" "$m" >"$build/log" 2>&1; then
    tail -20 "$build/log" >&2
    die "debootstrap of $suite from $m failed (log above)"
  fi
  # minbase has no init; an installed system does, and crossback looks for one.
  [ -e "$build/root/sbin/init" ] || ln -s /bin/sh "$build/root/sbin/init"
  rm -rf "$build/root/var/cache/apt/archives/"*.deb
  tar --xattrs --xattrs-include='*' --acls --numeric-owner -C "$build/root" -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
fi
mkdir -p "$dest"
[ -z "$(ls -A "$dest" | grep -v '^lost+found$' || true)" ] || die "$dest is not empty"
tar --xattrs --xattrs-include='*' --acls --numeric-owner -C "$dest" -xpf "$tarball"
getcap "$dest/usr/bin/ping" 2>/dev/null | grep -q cap_net_raw || die "the unpacked root has no capability on /usr/bin/ping: the filesystem or tar lost it"
say "Debian $suite root in $dest"
