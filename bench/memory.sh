#!/usr/bin/env bash
# F5, bounded memory: peak RSS of `crossback archive create` and `extract`
# for 10 000 and for 1 000 000 small files (no hard links), on ext4 loop
# file systems. Peak RSS from /usr/bin/time (max resident set size).
# Usage: sudo bench/memory.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$here/target/release/crossback
(cd "$here" && cargo build --release --locked -q)
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/crossback-mem.XXXXXX")
loop=""
cleanup() { set +e; umount "$work/mnt"; [ -n "$loop" ] && { blockdev --setrw "$loop"; losetup -d "$loop"; }; rm -rf "$work"; }
trap cleanup EXIT INT TERM
truncate -s 20G "$work/fs.img"
mkfs.ext4 -q -F -N 3000000 "$work/fs.img"
loop=$(losetup --find --show "$work/fs.img")
mkdir "$work/mnt" && mount "$loop" "$work/mnt"

echo "| files | create peak RSS | extract peak RSS | create time | extract time |"
echo "| --- | --- | --- | --- | --- |"
for n in 10000 100000 300000 1000000; do
  src=$work/mnt/src-$n
  # 1000 files of ~100 bytes per directory.
  python3 - "$src" "$n" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(b"%d small file\n" % i * 7)
PY
  /usr/bin/time -o "$work/t" -f "%M %e" "$bin" archive create "$src" -o "$work/mnt/a-$n.tar.zst" 2>/dev/null; c=$(cat "$work/t")
  /usr/bin/time -o "$work/t" -f "%M %e" "$bin" archive extract "$work/mnt/a-$n.tar.zst" -C "$work/mnt/x-$n" 2>/dev/null; x=$(cat "$work/t")
  echo "| $n | $(echo "$c" | awk '{printf "%.0f MiB", $1/1024}') | $(echo "$x" | awk '{printf "%.0f MiB", $1/1024}') | $(echo "$c" | awk '{print $2}') s | $(echo "$x" | awk '{print $2}') s |"
  rm -rf "$src" "$work/mnt/x-$n"
done
