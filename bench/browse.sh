#!/usr/bin/env bash
# `crossback browse` against `restic mount` of the same tree: a /home of
# about 1 GiB of incompressible data (one 500 MiB file, 100 000 small files
# in 1 000 directories, the rest in 64 MiB files), backed up by each.
# For each, with a fresh mount and the page cache dropped before each run:
#   mount      the command started → the mount point answers
#   first      the first byte of one small file (the tree read as needed)
#   find       `find` over the 100 000 entries
#   cat        `cat` of the 500 MiB file to /dev/null
#   peak RSS   of the serving process after all of that
# and `zstd -dc ARCHIVE | tar -xO MEMBER` of the same 500 MiB file, the
# tools' own way to get one file out of the archive.
# Usage: sudo bench/browse.sh [RUNS=3]      (restic: apt-get install restic fuse3)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
bin=$here/target/release/crossback
(cd "$here" && cargo build --release --locked -q)
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/crossback-browse.XXXXXX")
export CROSSBACK_SYSTEM_ROOT=$work/system-root
loops=()
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  sleep 1
  for m in "$work/view" "$work/m"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
  for l in "${loops[@]}"; do blockdev --setrw "$l"; losetup -d "$l"; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT INT TERM
disk() { truncate -s "$2" "$work/$1.img"; mkfs.ext4 -q -F "$work/$1.img"; DEV=$(losetup --find --show "$work/$1.img"); loops+=("$DEV"); }
disk root 256M; root=$DEV; disk home 3G; home=$DEV; disk sa 3G; sa=$DEV; disk sb 3G; sb=$DEV
mkdir -p "$work/m" "$work/view"; mount "$root" "$work/m"
mkdir -p "$work/m"/{etc,sbin,usr/lib,home}; echo 'ID=bench' > "$work/m/usr/lib/os-release"; ln -s ../usr/lib/os-release "$work/m/etc/os-release"; touch "$work/m/sbin/init"
printf 'UUID=%s / ext4 defaults 0 1\nUUID=%s /home ext4 defaults 0 2\n' "$(blkid -p -s UUID -o value "$root")" "$(blkid -p -s UUID -o value "$home")" > "$work/m/etc/fstab"
umount "$work/m"; mount "$home" "$work/m"; mkdir -p "$work/m/ann"
head -c 500M /dev/urandom > "$work/m/ann/big.bin"
for i in $(seq -w 0 6); do head -c 64M /dev/urandom > "$work/m/ann/fill-$i"; done
python3 - "$work/m/ann/small" <<'EOF'
import os, sys
root = sys.argv[1]
for d in range(1000):
    p = os.path.join(root, "d%03d" % d)
    os.makedirs(p)
    for f in range(100):
        with open(os.path.join(p, "f%03d" % f), "wb") as fh:
            fh.write(os.urandom(512))
EOF
echo "the needle" > "$work/m/ann/small/d500/needle.txt"
cfg=$work/config.toml
"$bin" --config "$cfg" init --yes --devices "$root,$home,$sa,$sb" >/dev/null
"$bin" --config "$cfg" media prepare "$sa" "$sb" >/dev/null
umount "$work/m"
"$bin" --config "$cfg" backup >/dev/null
have_restic=0
if command -v restic >/dev/null && command -v fusermount3 >/dev/null; then
  have_restic=1
  mount -o ro "$home" "$work/m"
  export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$work/restic-repo
  restic init -q
  restic backup -q --host bench "$work/m" >/dev/null
  umount "$work/m"
fi

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# One run against a mount made by "$@" whose tree is at $work/view/$2…
# (prints: mount first find cat rss_kib)
measure() { # TREE-UNDER-VIEW COMMAND…
  local tree=$1; shift
  cold
  local s; s=$(now)
  "$@" >"$work/serve.log" 2>&1 &
  local pid=$!; pids+=("$pid")
  until [ -e "$work/view/$tree/ann/big.bin" ]; do
    sleep 0.02
    kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
    [ "$(echo "$(since "$s") > 300" | bc)" = 0 ] || { echo "$*: $tree not shown within 5 minutes" >&2; exit 1; }
  done
  local t_mount; t_mount=$(since "$s")
  cold
  s=$(now); head -c 1 "$work/view/$tree/ann/small/d500/needle.txt" >/dev/null; local t_first; t_first=$(since "$s")
  cold
  s=$(now); local n; n=$(find "$work/view/$tree/ann/small" | wc -l); local t_find; t_find=$(since "$s")
  [ "$n" -ge 100000 ] || { echo "find saw $n entries" >&2; exit 1; }
  cold
  s=$(now); cat "$work/view/$tree/ann/big.bin" >/dev/null; local t_cat; t_cat=$(since "$s")
  local rss; rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  mountpoint -q "$work/view" && umount "$work/view"
  echo "$t_mount $t_first $t_find $t_cat $rss"
}

report() { # NAME FILE
  local f=$2
  printf '%-22s mount %6.2fs  first byte %6.3fs  find %6.2fs  cat 500 MiB %6.2fs  peak RSS %5d MiB\n' "$1" \
    "$(cut -d' ' -f1 "$f" | median)" "$(cut -d' ' -f2 "$f" | median)" "$(cut -d' ' -f3 "$f" | median)" \
    "$(cut -d' ' -f4 "$f" | median)" "$(( $(cut -d' ' -f5 "$f" | median) / 1024 ))"
}

: >"$work/crossback.txt"; : >"$work/restic.txt"; : >"$work/tools.txt"
for i in $(seq "$runs"); do
  measure latest/bench/home "$bin" --config "$cfg" browse "$work/view" >>"$work/crossback.txt"
  if [ "$have_restic" = 1 ]; then
    measure "snapshots/latest$work/m" restic mount "$work/view" >>"$work/restic.txt"
  fi
  # The tools' way: zstd + GNU tar over the archive on the slot (mounted read-only).
  mount -o ro,noload "$sa" "$work/m" 2>/dev/null || mount -o ro,noload "$sb" "$work/m"
  a=$(ls "$work"/m/crossback/gen-*/bench/home.tar.zst | head -1)
  size=$(du -h --apparent-size "$a" | cut -f1)
  cold
  s=$(now); zstd -dc "$a" | tar -xO ./ann/big.bin >/dev/null; since "$s" >>"$work/tools.txt"
  umount "$work/m"
done
echo "browse benchmark: a /home archive of $size (100 000 small files, one of 500 MiB), medians of $runs runs, cold page cache"
report "crossback browse" "$work/crossback.txt"
[ "$have_restic" = 1 ] && report "restic mount ($(restic version | cut -d' ' -f2))" "$work/restic.txt"
[ "$have_restic" = 1 ] || echo "restic mount: not measured (apt-get install restic fuse3)"
printf '%-22s cat 500 MiB %6.2fs\n' "zstd -dc | tar -xO" "$(median <"$work/tools.txt")"
