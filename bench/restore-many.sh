#!/usr/bin/env bash
# Issue 15: restoring many tiny files. `crossback archive extract` of an
# archive of N tiny files (0-2 KiB, 1000 per directory) with the default
# threads (one per core) and with --threads 1 (only the thread that reads
# the archive), against `zstd -dc | tar -xpf -` of the same tree, in the
# same runs; cold caches, each run into a freshly made ext4, timed up to
# its sync. Median of RUNS.
# Usage: sudo bench/restore-many.sh [RUNS=3] [FILES=1000000]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
files=${2:-1000000}
bin=$here/target/release/crossback
(cd "$here" && cargo build --release --locked -q)
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/crossback-many.XXXXXX")
loops=()
mounts=()
cleanup() {
  set +e
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[$i]}"; done
  for l in "${loops[@]}"; do losetup -d "$l"; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# A fresh ext4 with room for the files, on a loop device, mounted at $2.
fresh() {
  truncate -s 12G "$work/$1.img"; mkfs.ext4 -q -F -N $((files + files / 10 + 10000)) "$work/$1.img"
  local l; l=$(losetup --find --show "$work/$1.img"); loops+=("$l")
  mkdir -p "$2"; mount "$l" "$2"; mounts+=("$2")
}
unfresh() { # the last one made
  umount "${mounts[-1]}"; unset 'mounts[-1]'; losetup -d "${loops[-1]}"; unset 'loops[-1]'; rm -f "$work/$1.img"
}

fresh src "$work/src"
/usr/bin/python3 - "$work/src/t" "$files" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
random.seed(15)
for d in range((n + 999) // 1000):
    dp = f"{root}/d{d:04}"
    os.makedirs(dp)
    for f in range(min(1000, n - d * 1000)):
        with open(f"{dp}/f{f:04}", "wb") as fh:
            fh.write((b"tiny file %d %d\n" % (d, f)) * (random.randint(0, 2048) // 16))
PY
"$bin" archive create "$work/src/t" -o "$work/many.tar.zst" 2>&1 | tail -1
(cd "$work/src/t" && tar --numeric-owner -cf - . | zstd -q -T0 -3 > "$work/many-peer.tar.zst")
umount "$work/src"; unset 'mounts[-1]'

declare -A t
for i in $(seq "$runs"); do
  for who in crossback crossback-1 peer; do
    fresh dst "$work/dst"; drop
    s=$(now)
    case $who in
      crossback) "$bin" archive extract "$work/many.tar.zst" -C "$work/dst/r" >/dev/null 2>&1 ;;
      crossback-1) "$bin" archive extract "$work/many.tar.zst" -C "$work/dst/r" --threads 1 >/dev/null 2>&1 ;;
      peer) mkdir "$work/dst/r"; zstd -dc "$work/many-peer.tar.zst" | tar --numeric-owner -xpf - -C "$work/dst/r" ;;
    esac
    sync -f "$work/dst"
    t[$who]+="$(echo "$(now) - $s" | bc) "
    [ "$(find "$work/dst/r" -type f | wc -l)" = "$files" ] || { echo "restore-many: $who restored the wrong number of files" >&2; exit 1; }
    unfresh dst
  done
done

m() { echo ${t[$1]} | tr ' ' '\n' | median; }
c=$(m crossback); c1=$(m crossback-1); p=$(m peer)
echo
echo "$files tiny files, $(nproc) cores"
echo "| restore, median of $runs (s) | time | files/s | vs --threads 1 | vs peer |"
echo "| --- | --- | --- | --- | --- |"
printf '| crossback (threads: one per core) | %.2f | %.0f | %.2fx faster | %.2f |\n' "$c" "$(echo "$files / $c" | bc -l)" "$(echo "$c1 / $c" | bc -l)" "$(echo "$c / $p" | bc -l)"
printf '| crossback --threads 1 | %.2f | %.0f | 1 | %.2f |\n' "$c1" "$(echo "$files / $c1" | bc -l)" "$(echo "$c1 / $p" | bc -l)"
printf '| zstd -dc \\| tar -xpf - | %.2f | %.0f | | 1 |\n' "$p" "$(echo "$files / $p" | bc -l)"
echo
echo "all runs (s): crossback: ${t[crossback]}; --threads 1: ${t[crossback-1]}; peer: ${t[peer]}"
