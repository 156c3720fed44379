#!/usr/bin/env bash
# Speed and size of `crossback archive create|extract` against the peers
# named in the issue, on cold caches, in the same run:
#   create:  tar --xattrs --xattrs-include='*' --acls --sparse --numeric-owner -cf - . | zstd -T0 -3
#   extract: zstd -dc | tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf -  (into an empty ext4)
# and the cost of encryption: the same commands with --recipient / --identity
# (age, to an X25519 key), against crossback's own plaintext runs.
# Data: make-rootfs.sh's Debian root + make-tree.py --scale 1, on an ext4 loop fs.
# Usage: sudo bench/archive.sh [RUNS=3]   (needs ../shared/bench; writes a report to stdout)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
bench=${CROSSBACK_SHARED:-$here/../shared}/bench
bin=$here/target/release/crossback
(cd "$here" && cargo build --release --locked -q)
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/crossback-bench.XXXXXX")
loops=()
mounts=()
cleanup() {
  set +e
  for m in "${mounts[@]}"; do chattr -R -i -a "$m" >/dev/null 2>&1; umount "$m"; done
  for l in "${loops[@]}"; do blockdev --setrw "$l"; losetup -d "$l"; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
mkfs_mount() { # IMAGE SIZE MOUNTPOINT
  truncate -s "$2" "$1"; mkfs.ext4 -q -F "$1"
  local l; l=$(losetup --find --show "$1"); loops+=("$l")
  mkdir -p "$3"; mount "$l" "$3"; mounts+=("$3")
}
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

mkfs_mount "$work/src.img" 24G "$work/src"
mkfs_mount "$work/out.img" 24G "$work/out"
bash "$bench/make-rootfs.sh" "$work/src/rootfs" | tail -1
python3 "$bench/make-tree.py" "$work/src/tree" --scale 1 | tail -1
used=$(df -B1 --output=used "$work/src" | tail -1)
echo "source: $(numfmt --to=iec "$used") used on ext4"

key=$work/age.key
if command -v age-keygen >/dev/null; then age-keygen -o "$key" 2>/dev/null; else echo "age-keygen missing (apt-get install age)"; exit 1; fi
recipient=$(age-keygen -y "$key")

declare -A t
for i in $(seq "$runs"); do
  for who in peer crossback crossback-age; do
    rm -f "$work/out/$who.tar.zst"; drop
    s=$(now)
    if [ $who = peer ]; then
      (cd "$work/src" && tar --xattrs --xattrs-include='*' --acls --sparse --numeric-owner -cf - . | zstd -q -T0 -3 > "$work/out/peer.tar.zst")
    elif [ $who = crossback ]; then
      "$bin" archive create "$work/src" -o "$work/out/crossback.tar.zst" 2>/dev/null
    else
      "$bin" archive create "$work/src" -o "$work/out/crossback-age.tar.zst" --recipient "$recipient" 2>/dev/null
    fi
    sync "$work/out/$who.tar.zst"
    t[create-$who]+="$(echo "$(now) - $s" | bc) "
  done
  for who in peer crossback crossback-age; do
    umount "$work/out" 2>/dev/null || true
    [ -d "$work/dst" ] && { umount "$work/dst" 2>/dev/null || true; }
    mount "${loops[1]}" "$work/out"
    mkfs_mount "$work/dst-$who-$i.img" 24G "$work/dst"
    drop
    s=$(now)
    if [ $who = peer ]; then
      zstd -dc "$work/out/peer.tar.zst" | tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf - -C "$work/dst" 2>/dev/null
    elif [ $who = crossback ]; then
      "$bin" archive extract "$work/out/crossback.tar.zst" -C "$work/dst" --force 2>/dev/null
    else
      "$bin" --identity "$key" archive extract "$work/out/crossback-age.tar.zst" -C "$work/dst" --force 2>/dev/null
    fi
    sync -f "$work/dst"
    t[extract-$who]+="$(echo "$(now) - $s" | bc) "
    umount "$work/dst"; mounts=("${mounts[@]:0:2}")
    blockdev --setrw "${loops[-1]}"; losetup -d "${loops[-1]}"; unset 'loops[-1]'
    rm -f "$work/dst-$who-$i.img"
  done
done

size_peer=$(stat -c %s "$work/out/peer.tar.zst")
size_cb=$(stat -c %s "$work/out/crossback.tar.zst")
echo
echo "| measure | crossback | peer | ratio |"
echo "| --- | --- | --- | --- |"
for op in create extract; do
  c=$(echo ${t[$op-crossback]} | tr ' ' '\n' | median)
  p=$(echo ${t[$op-peer]} | tr ' ' '\n' | median)
  printf '| %s wall time, median of %d (s) | %.2f | %.2f | %.2f |\n' "$op" "$runs" "$c" "$p" "$(echo "$c / $p" | bc -l)"
done
printf '| archive size (bytes) | %d | %d | %.3f |\n' "$size_cb" "$size_peer" "$(echo "$size_cb / $size_peer" | bc -l)"
echo
echo "| encryption (age) | encrypted | plain | ratio |"
echo "| --- | --- | --- | --- |"
for op in create extract; do
  e=$(echo ${t[$op-crossback-age]} | tr ' ' '\n' | median)
  c=$(echo ${t[$op-crossback]} | tr ' ' '\n' | median)
  printf '| %s wall time, median of %d (s) | %.2f | %.2f | %.2f |\n' "$op" "$runs" "$e" "$c" "$(echo "$e / $c" | bc -l)"
done
echo
echo "all runs (s): create crossback: ${t[create-crossback]}; create peer: ${t[create-peer]}; create encrypted: ${t[create-crossback-age]}; extract crossback: ${t[extract-crossback]}; extract peer: ${t[extract-peer]}; extract encrypted: ${t[extract-crossback-age]}"
