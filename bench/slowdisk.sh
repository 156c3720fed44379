#!/usr/bin/env bash
# crossback on an emulated slow USB disk (bench/slowdisk.py:
# 80 MiB/s written, 110 MiB/s read), against the peers in the same runs,
# cold caches, each write timed up to its final sync:
#   tar:        tar --xattrs --xattrs-include='*' --acls --sparse --numeric-owner -cf - . | zstd -T0 -3
#               zstd -dc | tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf -
#   duplicity:  duplicity full --no-encryption SRC file://DISK/dup  (the user's old procedure,
#               without its GnuPG step), duplicity restore
# crossback with adaptive compression (`--max-level $MAX_LEVEL`, default 9)
# as a fourth column, and `crossback backup` of the same data as a system (its read-back check
# included) against `crossback archive create` alone.
# The disk's limit is printed: the archive's bytes at the disk's speed.
# Data: make-rootfs.sh's Debian root with make-tree.py --scale 1 in /tree,
# on a fast ext4. The backup disk: two slots, each an ext4 on a loop device
# on its own paced FUSE image (one is written at a time).
# Usage: sudo bench/slowdisk.sh [RUNS=3] [WRITE_MIBS=80] [READ_MIBS=110]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
wmibs=${2:-80}
rmibs=${3:-110}
max_level=${MAX_LEVEL:-9}
bench=${CROSSBACK_SHARED:-$here/../shared}/bench
bin=$here/target/release/crossback
(cd "$here" && cargo build --release --locked -q)
/usr/bin/python3 -c 'import fusepy' 2>/dev/null || { echo "slowdisk.sh: needs python3-fusepy (apt-get install python3-fusepy)" >&2; exit 1; }
command -v duplicity >/dev/null || { echo "slowdisk.sh: needs duplicity (apt-get install duplicity)" >&2; exit 1; }
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/crossback-slow.XXXXXX")
export CROSSBACK_SYSTEM_ROOT=$work/system-root   # crossback's state (the media as last seen) stays with the benchmark
loops=()
mounts=()
fuses=()
cleanup() {
  set +e
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[$i]}"; done
  for l in "${loops[@]}"; do losetup -d "$l"; done
  for f in "${fuses[@]}"; do fusermount -u "$f" 2>/dev/null; done
  wait
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
loop() { DEV=$(losetup --find --show "$1"); loops+=("$DEV"); }
mount_at() { mkdir -p "$2"; mount "$1" "$2"; mounts+=("$2"); }
unmount_last() { umount "${mounts[-1]}"; unset 'mounts[-1]'; }
# duplicity without encryption, its cache in the work directory; its log
# shown if it fails.
dup() {
  PASSPHRASE= HOME=/root duplicity "$1" --no-encryption --archive-dir="$work/dup-cache" "${@:2}" > "$work/dup.log" 2>&1 ||
    { echo "slowdisk.sh: duplicity $1 failed:" >&2; tail -20 "$work/dup.log" >&2; exit 1; }
}

# The source and the restore target: fast, each its own ext4.
truncate -s 8G "$work/src.img"; mkfs.ext4 -q -F "$work/src.img"; loop "$work/src.img"; src=$DEV; mount_at "$src" "$work/src"
bash "$bench/make-rootfs.sh" "$work/src/deb" | tail -1
(shopt -s dotglob; mv "$work/src"/deb/* "$work/src/"; rmdir "$work/src/deb")
[ -e "$work/src/sbin/init" ] || ln -s /bin/sh "$work/src/sbin/init"
printf 'UUID=%s / ext4 defaults 0 1\n' "$(blkid -p -s UUID -o value "$src")" > "$work/src/etc/fstab"
python3 "$bench/make-tree.py" "$work/src/tree" --scale 1 | tail -1
echo "source: $(numfmt --to=iec "$(df -B1 --output=used "$work/src" | tail -1)") used on ext4"
unmount_last
truncate -s 8G "$work/dst.img"; mkfs.ext4 -q -F "$work/dst.img"; loop "$work/dst.img"; mount_at "$DEV" "$work/dst"
# The slow disk's two slots: ext4 on a loop device on a paced FUSE file each.
for s in a b; do
  truncate -s 4G "$work/slot$s.img"; mkfs.ext4 -q -F "$work/slot$s.img"
  mkdir -p "$work/fuse$s"
  /usr/bin/python3 "$here/bench/slowdisk.py" "$work/slot$s.img" "$work/fuse$s" --write-mibs "$wmibs" --read-mibs "$rmibs" &
  fuses+=("$work/fuse$s")
  for _ in $(seq 50); do [ -e "$work/fuse$s/disk" ] && break; sleep 0.1; done
  loop "$work/fuse$s/disk"; eval "slot$s=\$DEV"
done
mount -o ro "$src" "$work/src"; mounts+=("$work/src")
mount_at "$slota" "$work/out"

declare -A t
for i in $(seq "$runs"); do
  for who in peer duplicity crossback adaptive; do
    case $who in duplicity) rm -rf "$work/out/dup" "$work/dup-cache" ;; *) rm -f "$work/out/$who.tar.zst" ;; esac
    drop
    s=$(now)
    case $who in
      peer) (cd "$work/src" && tar --xattrs --xattrs-include='*' --acls --sparse --numeric-owner -cf - . 2>/dev/null | zstd -q -T0 -3 > "$work/out/peer.tar.zst") ;;
      duplicity) dup full "$work/src" "file://$work/out/dup" ;;
      crossback) "$bin" archive create "$work/src" -o "$work/out/crossback.tar.zst" 2>/dev/null ;;
      adaptive) "$bin" archive create "$work/src" -o "$work/out/adaptive.tar.zst" --max-level "$max_level" 2> "$work/adaptive.log" ;;
    esac
    sync -f "$work/out"
    t[create-$who]+="$(echo "$(now) - $s" | bc) "
  done
  for who in peer duplicity crossback adaptive; do
    rm -rf "$work/dst/restore"; mkdir "$work/dst/restore"; drop
    s=$(now)
    case $who in
      peer) zstd -dc "$work/out/peer.tar.zst" | tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf - -C "$work/dst/restore" 2>/dev/null ;;
      duplicity) dup restore --force "file://$work/out/dup" "$work/dst/restore" ;;
      crossback) "$bin" archive extract "$work/out/crossback.tar.zst" -C "$work/dst/restore" --force 2>/dev/null ;;
      adaptive) "$bin" archive extract "$work/out/adaptive.tar.zst" -C "$work/dst/restore" --force 2>/dev/null ;;
    esac
    sync -f "$work/dst"
    t[extract-$who]+="$(echo "$(now) - $s" | bc) "
  done
done
size_dup=$(du -sb "$work/out/dup" | cut -f1)
size_peer=$(stat -c %s "$work/out/peer.tar.zst")
size_cb=$(stat -c %s "$work/out/crossback.tar.zst")
size_ad=$(stat -c %s "$work/out/adaptive.tar.zst")
rm -rf "$work/out/dup" "$work/out"/*.tar.zst "$work/dup-cache"

# crossback backup of the same data as a system, onto the two slots in
# turn (the rotation wipes the older generation from the third run on).
unmount_last
umount "$work/src"; unset 'mounts[-1]'
cfg=$work/config.toml
"$bin" --config "$cfg" init --yes --devices "$src,$slota,$slotb" >/dev/null
"$bin" --config "$cfg" media prepare "$slota" "$slotb" >/dev/null
sys=$(grep -m1 '^name = ' "$cfg" | cut -d'"' -f2)
for i in $(seq "$runs"); do
  drop
  s=$(now)
  out=$("$bin" --config "$cfg" backup "$sys" 2>/dev/null)
  t[backup]+="$(echo "$(now) - $s" | bc) "
  t[backup-check]+="$(echo "$out" | sed -n 's/.*read-back check \([0-9.]*\)s.*/\1/p') "
done

m() { echo ${t[$1]} | tr ' ' '\n' | median; }
ratio() { echo "$1 / $2" | bc -l; }
limit_w=$(echo "$size_cb / ($wmibs * 1048576)" | bc -l)
limit_r=$(echo "$size_cb / ($rmibs * 1048576)" | bc -l)
echo
echo "emulated disk: $wmibs MiB/s written, $rmibs MiB/s read; $(nproc) cores"
echo "| measure, median of $runs | crossback | tar \| zstd -3 | duplicity | crossback / tar | crossback / duplicity | crossback / the disk's limit |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
c=$(m create-crossback); p=$(m create-peer); d=$(m create-duplicity)
printf '| create, to durable (s) | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f (limit %.2f s) |\n' "$c" "$p" "$d" "$(ratio "$c" "$p")" "$(ratio "$c" "$d")" "$(ratio "$c" "$limit_w")" "$limit_w"
c=$(m extract-crossback); p=$(m extract-peer); d=$(m extract-duplicity)
printf '| extract from it (s) | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f (limit %.2f s) |\n' "$c" "$p" "$d" "$(ratio "$c" "$p")" "$(ratio "$c" "$d")" "$(ratio "$c" "$limit_r")" "$limit_r"
printf '| bytes written | %d | %d | %d | %.3f | %.3f | |\n' "$size_cb" "$size_peer" "$size_dup" "$(ratio "$size_cb" "$size_peer")" "$(ratio "$size_cb" "$size_dup")"
c=$(m create-adaptive); ce=$(m extract-adaptive); cf=$(m create-crossback)
echo
echo "| adaptive compression (--max-level $max_level), median of $runs | value | vs fixed level 3 | vs tar \\| zstd -3 | / the disk's limit |"
echo "| --- | --- | --- | --- | --- |"
la=$(echo "$size_ad / ($wmibs * 1048576)" | bc -l)
printf '| create, to durable (s) | %.2f | %.2f | %.2f | %.2f (limit %.2f s) |\n' "$c" "$(ratio "$c" "$cf")" "$(ratio "$c" "$(m create-peer)")" "$(ratio "$c" "$la")" "$la"
printf '| extract from it (s) | %.2f | %.2f | %.2f | |\n' "$ce" "$(ratio "$ce" "$(m extract-crossback)")" "$(ratio "$ce" "$(m extract-peer)")"
printf '| bytes written | %d | %.3f | %.3f | |\n' "$size_ad" "$(ratio "$size_ad" "$size_cb")" "$(ratio "$size_ad" "$size_peer")"
echo "levels of the last run: $(grep 'zstd levels' "$work/adaptive.log" || echo 'one level')"
b=$(m backup); c=$(m create-crossback)
echo
echo "| crossback backup of it as a system (s) | median of $runs |"
echo "| --- | --- |"
printf '| backup (find, mount, archive, read back, rotate, record) | %.2f |\n' "$b"
printf '| … of which the read-back check after the final fsync | %.2f |\n' "$(m backup-check)"
printf '| archive create alone (above) | %.2f |\n' "$c"
printf '| backup / archive create | %.2f |\n' "$(ratio "$b" "$c")"
echo
for k in create-crossback create-adaptive create-peer create-duplicity extract-crossback extract-adaptive extract-peer extract-duplicity backup backup-check; do echo "runs $k (s): ${t[$k]}"; done
