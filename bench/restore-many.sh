#!/usr/bin/env bash
# Restoring many tiny files. `crossback archive extract` of an
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

declare -A t r
for i in $(seq "$runs"); do
  for who in crossback crossback-1 peer; do
    fresh dst "$work/dst"; drop
    s=$(now)
    case $who in
      crossback) "$bin" archive extract "$work/many.tar.zst" -C "$work/dst/r" >/dev/null 2>&1 ;;
      crossback-1) "$bin" archive extract "$work/many.tar.zst" -C "$work/dst/r" --threads 1 >/dev/null 2>&1 ;;
      peer) mkdir "$work/dst/r"; zstd -dc "$work/many-peer.tar.zst" | tar --numeric-owner -xpf - -C "$work/dst/r" ;;
    esac
    r[$who]+="$(echo "$(now) - $s" | bc) "
    sync -f "$work/dst"
    t[$who]+="$(echo "$(now) - $s" | bc) "
    [ "$(find "$work/dst/r" -type f | wc -l)" = "$files" ] || { echo "restore-many: $who restored the wrong number of files" >&2; exit 1; }
    unfresh dst
  done
done

m() { echo ${t[$1]} | tr ' ' '\n' | median; }
mr() { echo ${r[$1]} | tr ' ' '\n' | median; }
echo
echo "$files tiny files, $(nproc) cores; 'returned': the command is done, 'durable': and synced"
echo "| restore, median of $runs (s) | returned | files/s | durable | files/s | durable, vs --threads 1 | durable, vs peer |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
row() { # NAME KEY
  local a d; a=$(mr "$2"); d=$(m "$2")
  printf '| %s | %.2f | %.0f | %.2f | %.0f | %.2f | %.2f |\n' "$1" "$a" "$(echo "$files / $a" | bc -l)" "$d" "$(echo "$files / $d" | bc -l)" \
    "$(echo "$d / $(m crossback-1)" | bc -l)" "$(echo "$d / $(m peer)" | bc -l)"
}
row "crossback (threads: one per core)" crossback
row "crossback --threads 1" crossback-1
row "zstd -dc \\| tar -xpf -" peer
echo
for k in crossback crossback-1 peer; do echo "runs $k (s): returned ${r[$k]}; durable ${t[$k]}"; done
