#!/usr/bin/env bash
# Fidelity against independent oracles: a tree from ../shared/bench/make-tree.py
# on an ext4 loop file system, archived by crossback, then restored
#  (1) by GNU tar from `zstd -dc` (F1: standard format), and
#  (2) by crossback itself (F2: full fidelity, inode flags included),
# and the same tree encrypted to an age key, restored
#  (3) by the age tool + zstd + GNU tar, and (4) by crossback --identity,
# each compared with ../shared/bench/treediff.py: 0 differences required.
# Usage: scripts/oracle-check.sh [CROSSBACK_BINARY] [SCALE]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$here/target/debug/crossback}")
scale=${2:-0.05}
bench=${CROSSBACK_SHARED:-$here/../shared}/bench
if [ ! -f "$bench/make-tree.py" ]; then
  if [ "${CROSSBACK_REQUIRE_ORACLE:-0}" = 1 ]; then
    echo "oracle-check: $bench/make-tree.py not found (CROSSBACK_REQUIRE_ORACLE=1 needs ../shared)" >&2
    exit 1
  fi
  echo "oracle-check: SKIPPED: $bench not found (set CROSSBACK_SHARED)" >&2
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/crossback-oracle.XXXXXX")
loops=()
cleanup() {
  set +e
  chattr -R -i -a "$work/mnt" >/dev/null 2>&1
  umount "$work/mnt" 2>/dev/null
  for l in "${loops[@]}"; do blockdev --setrw "$l" 2>/dev/null; losetup -d "$l" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

truncate -s 8G "$work/fs.img"
mkfs.ext4 -q -F "$work/fs.img"
loop=$(losetup --find --show "$work/fs.img"); loops+=("$loop")
mkdir "$work/mnt"
mount "$loop" "$work/mnt"
python3 "$bench/make-tree.py" "$work/mnt/src" --scale "$scale" | tail -1

"$bin" archive create "$work/mnt/src" -o "$work/mnt/a.tar.zst"
"$bin" archive verify "$work/mnt/a.tar.zst" --against "$work/mnt/src"

mkdir "$work/mnt/by-tar"
zstd -dc "$work/mnt/a.tar.zst" | tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf - -C "$work/mnt/by-tar" 2>/dev/null
echo "oracle-check: GNU tar restore (F1):"
python3 "$bench/treediff.py" "$work/mnt/src" "$work/mnt/by-tar" --ignore-atime --ignore-sockets --no-flags | tail -3

"$bin" archive extract "$work/mnt/a.tar.zst" -C "$work/mnt/by-crossback"
echo "oracle-check: crossback restore (F2):"
python3 "$bench/treediff.py" "$work/mnt/src" "$work/mnt/by-crossback" --ignore-atime --ignore-sockets | tail -3
age-keygen -o "$work/age.key" 2>/dev/null
"$bin" archive create "$work/mnt/src" -o "$work/mnt/e.tar.zst.age" --recipient "$(age-keygen -y "$work/age.key")"
if head -c 200000 "$work/mnt/e.tar.zst.age" | grep -qa "ustar"; then echo "oracle-check: the encrypted archive holds tar headers in the clear" >&2; exit 1; fi
mkdir "$work/mnt/by-age"
age -d -i "$work/age.key" "$work/mnt/e.tar.zst.age" | zstd -dc | tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf - -C "$work/mnt/by-age" 2>/dev/null
echo "oracle-check: age + zstd + GNU tar restore of the encrypted archive:"
python3 "$bench/treediff.py" "$work/mnt/src" "$work/mnt/by-age" --ignore-atime --ignore-sockets --no-flags | tail -3
"$bin" --identity "$work/age.key" archive extract "$work/mnt/e.tar.zst.age" -C "$work/mnt/by-crossback-age"
echo "oracle-check: crossback restore of the encrypted archive:"
python3 "$bench/treediff.py" "$work/mnt/src" "$work/mnt/by-crossback-age" --ignore-atime --ignore-sockets | tail -3
echo "oracle-check: passed"
