#!/usr/bin/env bash
# Rotation overhead: `crossback backup` of one system against
# `crossback archive create` of the same filesystems plus the read-back
# check (`crossback archive verify` after dropping the cache), in the same
# run, caches dropped before each step. The system: make-rootfs.sh's Debian
# root on one ext4, make-tree.py --scale 1 as its /home on another; two
# ext4 slots. Usage: sudo bench/backup.sh [RUNS=3]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
bench=${CROSSBACK_SHARED:-$here/../shared}/bench
bin=$here/target/release/crossback
(cd "$here" && cargo build --release --locked -q)
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/crossback-bbench.XXXXXX")
export CROSSBACK_SYSTEM_ROOT=$work/system-root   # crossback's state (the media as last seen) stays with the benchmark
. "$here/bench/lib.sh"

disk root 8G; root=$DEV; disk home 8G; home=$DEV; disk slota 8G; sa=$DEV; disk slotb 8G; sb=$DEV
mkdir -p "$work/m"; mount "$root" "$work/m"
bash "$bench/make-rootfs.sh" "$work/m/deb" | tail -1
(shopt -s dotglob; mv "$work/m"/deb/* "$work/m/"; rmdir "$work/m/deb")
[ -e "$work/m/sbin/init" ] || ln -s /bin/sh "$work/m/sbin/init"
printf 'UUID=%s / ext4 defaults 0 1\nUUID=%s /home ext4 defaults 0 2\n' "$(blkid -p -s UUID -o value "$root")" "$(blkid -p -s UUID -o value "$home")" > "$work/m/etc/fstab"
umount "$work/m"; mount "$home" "$work/m"
python3 "$bench/make-tree.py" "$work/m/tree" --scale 1 | tail -1
umount "$work/m"
cfg=$work/config.toml
"$bin" --config "$cfg" init --yes --devices "$root,$home,$sa,$sb" >/dev/null
"$bin" --config "$cfg" media prepare "$sa" "$sb" >/dev/null
sys=$(grep -m1 '^name = ' "$cfg" | cut -d'"' -f2)

declare -a tb ta tv rb
for i in $(seq "$runs"); do
  # The peer: archive create of each filesystem (mounted read-only) onto a slot-sized ext4, then verify.
  disk peer-$i 8G; peer=$DEV
  mkdir -p "$work/p" "$work/src"; mount "$peer" "$work/p"; mnts+=("$work/p")
  drop; s=$(now); c=0
  for d in "$root" "$home"; do
    mount -o ro "$d" "$work/src"; mnts+=("$work/src")
    "$bin" archive create "$work/src" -o "$work/p/$(basename "$d").tar.zst" 2>/dev/null
    umount "$work/src"; unset 'mnts[-1]'
  done
  ta+=("$(echo "$(now) - $s" | bc)")
  drop; s=$(now)
  for f in "$work/p"/*.tar.zst; do "$bin" archive verify "$f" 2>/dev/null; done
  tv+=("$(echo "$(now) - $s" | bc)")
  umount "$work/p"; unset 'mnts[-1]'
  # crossback backup (the rotation: wipes the older generation after the first runs).
  drop; s=$(now)
  out=$("$bin" --config "$cfg" backup "$sys")
  tb+=("$(echo "$(now) - $s" | bc)")
  rb+=("$(echo "$out" | sed -n 's/.*read-back check \([0-9.]*\)s.*/\1/p')")
done
a=$(printf '%s\n' "${ta[@]}" | median); v=$(printf '%s\n' "${tv[@]}" | median); b=$(printf '%s\n' "${tb[@]}" | median); r=$(printf '%s\n' "${rb[@]}" | median)
echo
echo "| measure | median of $runs (s) |"
echo "| --- | --- |"
echo "| archive create, both filesystems | $a |"
echo "| archive verify, both archives, cold cache (the read-back check) | $v |"
echo "| crossback backup (rotation, mounts, read-back check included) | $b |"
echo "| … of which the read-back check, as backup reports it | $r |"
printf '| ratio backup / (create + verify) | %.2f |\n' "$(echo "$b / ($a + $v)" | bc -l)"
echo
echo "runs: create ${ta[*]}; verify ${tv[*]}; backup ${tb[*]}; read-back ${rb[*]}"
