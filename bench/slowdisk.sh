#!/usr/bin/env bash
# Issue 15: `crossback archive create|extract` on an emulated slow USB disk
# (bench/slowdisk.py: 80 MiB/s written, 110 MiB/s read), against
#   create:  tar --xattrs --xattrs-include='*' --acls --sparse --numeric-owner -cf - . | zstd -T0 -3
#   extract: zstd -dc | tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf -
# in the same runs, cold caches, each create timed up to its final sync. The
# disk's limit is printed: the archive's bytes at the disk's speed.
# Data: make-rootfs.sh's Debian root + make-tree.py --scale 1 on a fast ext4.
# Usage: sudo bench/slowdisk.sh [RUNS=3] [WRITE_MIBS=80] [READ_MIBS=110]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
wmibs=${2:-80}
rmibs=${3:-110}
bench=${CROSSBACK_SHARED:-$here/../shared}/bench
bin=$here/target/release/crossback
(cd "$here" && cargo build --release --locked -q)
/usr/bin/python3 -c 'import fusepy' 2>/dev/null || { echo "slowdisk.sh: needs python3-fusepy (apt-get install python3-fusepy)" >&2; exit 1; }
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/crossback-slow.XXXXXX")
loops=()
mounts=()
fuse_pid=
cleanup() {
  set +e
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[$i]}"; done
  for l in "${loops[@]}"; do losetup -d "$l"; done
  [ -n "$fuse_pid" ] && { fusermount -u "$work/slow" 2>/dev/null; wait "$fuse_pid" 2>/dev/null; }
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mount_loop() { # IMAGE MOUNTPOINT
  local l; l=$(losetup --find --show "$1"); loops+=("$l")
  mkdir -p "$2"; mount "$l" "$2"; mounts+=("$2")
}

# The source and the restore target: fast, each its own ext4.
truncate -s 8G "$work/src.img"; mkfs.ext4 -q -F "$work/src.img"; mount_loop "$work/src.img" "$work/src"
bash "$bench/make-rootfs.sh" "$work/src/rootfs" | tail -1
python3 "$bench/make-tree.py" "$work/src/tree" --scale 1 | tail -1
echo "source: $(numfmt --to=iec "$(df -B1 --output=used "$work/src" | tail -1)") used on ext4"
truncate -s 8G "$work/dst.img"; mkfs.ext4 -q -F "$work/dst.img"; mount_loop "$work/dst.img" "$work/dst"
# The slow disk: an ext4 on a loop device on the paced FUSE file.
truncate -s 4G "$work/slow.img"; mkfs.ext4 -q -F "$work/slow.img"
mkdir -p "$work/slow"
/usr/bin/python3 "$here/bench/slowdisk.py" "$work/slow.img" "$work/slow" --write-mibs "$wmibs" --read-mibs "$rmibs" &
fuse_pid=$!
for _ in $(seq 50); do [ -e "$work/slow/disk" ] && break; sleep 0.1; done
mount_loop "$work/slow/disk" "$work/out"

declare -A t
for i in $(seq "$runs"); do
  for who in peer crossback; do
    rm -f "$work/out/$who.tar.zst"; drop
    s=$(now)
    if [ $who = peer ]; then
      (cd "$work/src" && tar --xattrs --xattrs-include='*' --acls --sparse --numeric-owner -cf - . 2>/dev/null | zstd -q -T0 -3 > "$work/out/peer.tar.zst")
    else
      "$bin" archive create "$work/src" -o "$work/out/crossback.tar.zst" 2>/dev/null
    fi
    sync "$work/out/$who.tar.zst"
    t[create-$who]+="$(echo "$(now) - $s" | bc) "
  done
  for who in peer crossback; do
    rm -rf "$work/dst/restore"; mkdir "$work/dst/restore"; drop
    s=$(now)
    if [ $who = peer ]; then
      zstd -dc "$work/out/peer.tar.zst" | tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf - -C "$work/dst/restore" 2>/dev/null
    else
      "$bin" archive extract "$work/out/crossback.tar.zst" -C "$work/dst/restore" --force 2>/dev/null
    fi
    sync -f "$work/dst"
    t[extract-$who]+="$(echo "$(now) - $s" | bc) "
  done
done

size_peer=$(stat -c %s "$work/out/peer.tar.zst")
size_cb=$(stat -c %s "$work/out/crossback.tar.zst")
limit_w=$(echo "$size_cb / ($wmibs * 1048576)" | bc -l)
limit_r=$(echo "$size_cb / ($rmibs * 1048576)" | bc -l)
echo
echo "emulated disk: $wmibs MiB/s written, $rmibs MiB/s read"
echo "| measure | crossback | peer | ratio | crossback / the disk's limit |"
echo "| --- | --- | --- | --- | --- |"
c=$(echo ${t[create-crossback]} | tr ' ' '\n' | median); p=$(echo ${t[create-peer]} | tr ' ' '\n' | median)
printf '| create to durable, median of %d (s) | %.2f | %.2f | %.2f | %.2f (limit %.2f s) |\n' "$runs" "$c" "$p" "$(echo "$c / $p" | bc -l)" "$(echo "$c / $limit_w" | bc -l)" "$limit_w"
c=$(echo ${t[extract-crossback]} | tr ' ' '\n' | median); p=$(echo ${t[extract-peer]} | tr ' ' '\n' | median)
printf '| extract from it, median of %d (s) | %.2f | %.2f | %.2f | %.2f (limit %.2f s) |\n' "$runs" "$c" "$p" "$(echo "$c / $p" | bc -l)" "$(echo "$c / $limit_r" | bc -l)" "$limit_r"
printf '| bytes written | %d | %d | %.3f | |\n' "$size_cb" "$size_peer" "$(echo "$size_cb / $size_peer" | bc -l)"
echo
echo "all runs (s): create crossback: ${t[create-crossback]}; create peer: ${t[create-peer]}; extract crossback: ${t[extract-crossback]}; extract peer: ${t[extract-peer]}"
