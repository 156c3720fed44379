#!/usr/bin/env bash
# Single-file restore from a multi-GiB backup: `crossback restore SYSTEM
# --to DIR /home/ann/needle.txt` against a /home archive of 3 GiB of
# incompressible data, caches dropped before each run (the command mounts
# both slots, finds the generation, reads the index and one frame).
# Usage: sudo bench/restore-one.sh [RUNS=5]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-5}
bin=$here/target/release/crossback
(cd "$here" && cargo build --release --locked -q)
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/crossback-rbench.XXXXXX")
export CROSSBACK_SYSTEM_ROOT=$work/system-root   # crossback's state (the media as last seen) stays with the benchmark
loops=()
cleanup() { set +e; umount "$work/m" 2>/dev/null; for l in "${loops[@]}"; do blockdev --setrw "$l"; losetup -d "$l"; done; rm -rf --one-file-system "$work"; }
trap cleanup EXIT INT TERM
disk() { truncate -s "$2" "$work/$1.img"; mkfs.ext4 -q -F "$work/$1.img"; DEV=$(losetup --find --show "$work/$1.img"); loops+=("$DEV"); }
disk root 256M; root=$DEV; disk home 8G; home=$DEV; disk sa 8G; sa=$DEV; disk sb 8G; sb=$DEV
mkdir -p "$work/m"; mount "$root" "$work/m"
mkdir -p "$work/m"/{etc,sbin,usr/lib,home}; echo 'ID=bench' > "$work/m/usr/lib/os-release"; ln -s ../usr/lib/os-release "$work/m/etc/os-release"; touch "$work/m/sbin/init"
printf 'UUID=%s / ext4 defaults 0 1\nUUID=%s /home ext4 defaults 0 2\n' "$(blkid -p -s UUID -o value "$root")" "$(blkid -p -s UUID -o value "$home")" > "$work/m/etc/fstab"
umount "$work/m"; mount "$home" "$work/m"; mkdir -p "$work/m/ann"
for i in $(seq -w 0 47); do head -c 64M /dev/urandom > "$work/m/ann/big-$i"; [ "$i" = 30 ] && echo "the needle" > "$work/m/ann/needle.txt"; done
umount "$work/m"
cfg=$work/config.toml
"$bin" --config "$cfg" init --yes --devices "$root,$home,$sa,$sb" >/dev/null
"$bin" --config "$cfg" media prepare "$sa" "$sb" >/dev/null
"$bin" --config "$cfg" backup >/dev/null
ls -l "$work" >/dev/null
times=()
for i in $(seq "$runs"); do
  rm -rf "$work/out"; sync; echo 3 > /proc/sys/vm/drop_caches
  s=$(date +%s.%N)
  "$bin" --config "$cfg" restore bench --to "$work/out" /home/ann/needle.txt >/dev/null
  times+=("$(echo "$(date +%s.%N) - $s" | bc)")
  grep -q "the needle" "$work/out/home/ann/needle.txt"
done
size=$("$bin" --config "$cfg" status --json | python3 -c 'import json,sys; v=json.load(sys.stdin); print(max((s["generation"] or {}).get("systems",[{}])[0].get("bytes",0) for s in v["slots"]))')
med=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "backup of /home: $(numfmt --to=iec "$size") in the slot"
echo "single-file restore, cold cache, median of $runs: ${med}s (runs: ${times[*]})"
