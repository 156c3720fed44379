#!/usr/bin/env bash
# A safe first look at crossback: everything happens on file systems made
# from image files in a temporary directory, never on a real disk.
# It builds crossback, makes a tree full of edge cases on an ext4 loop file
# system, archives it, lists and verifies the archive, restores it, and
# checks the restore against the original. Cleans up on exit and Ctrl-C.
# Usage: sudo scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it makes loop devices): sudo $0" >&2; exit 1; }
scripts/install-deps.sh
cargo build --release --locked -q
bin=$PWD/target/release/crossback

work=$(mktemp -d "${TMPDIR:-/tmp}/crossback-demo.XXXXXX")
loop=""
cleanup() {
  set +e
  chattr -R -i -a "$work/mnt" >/dev/null 2>&1
  umount "$work/mnt" 2>/dev/null
  [ -n "$loop" ] && { blockdev --setrw "$loop"; losetup -d "$loop"; }
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() { printf '\n== %s\n' "$*"; }
step "a 4 GiB ext4 file system in $work/fs.img, on its own loop device"
truncate -s 4G "$work/fs.img"
mkfs.ext4 -q -F "$work/fs.img"
loop=$(losetup --find --show "$work/fs.img")
mkdir "$work/mnt" && mount "$loop" "$work/mnt"
if [ -f ../shared/bench/make-tree.py ]; then
  python3 ../shared/bench/make-tree.py "$work/mnt/src" --scale 0.05 | tail -1
else
  # Without the shared tree builder: a copy of /usr and /etc will do.
  mkdir "$work/mnt/src" && cp -a /etc /usr/share/doc "$work/mnt/src/"
fi

step "crossback archive create"
"$bin" archive create "$work/mnt/src" -o "$work/mnt/src.tar.zst"
step "crossback archive ls (from the index, first lines)"
"$bin" archive ls "$work/mnt/src.tar.zst" | head -8
step "crossback archive verify --against the source"
"$bin" archive verify "$work/mnt/src.tar.zst" --against "$work/mnt/src"
step "crossback archive extract into an empty directory"
"$bin" archive extract "$work/mnt/src.tar.zst" -C "$work/mnt/restored"
step "the restore compared with the original"
"$bin" archive verify "$work/mnt/src.tar.zst" --against "$work/mnt/restored"
step "the same archive restored by zstd + GNU tar alone"
mkdir "$work/mnt/by-tar"
zstd -dc "$work/mnt/src.tar.zst" | tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf - -C "$work/mnt/by-tar" 2>/dev/null
du -sh "$work/mnt/by-tar"
step "done; cleaning up"
