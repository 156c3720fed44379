#!/usr/bin/env bash
# What this machine allows on a slow disk, whatever crossback does
# with it. On the data of bench/slowdisk.sh (the Debian root with
# make-tree.py --scale 1 in /tree, on a fast ext4), cold caches:
# 1. `crossback archive create` onto a fast ext4, its archive's length
#    sampled every 10 ms: how fast this machine makes the archive (read,
#    compress). A writer that sends those bytes to a disk of WRITE_MIBS as
#    soon as they exist, with BUFFER bytes allowed between the two (64 MiB,
#    and unlimited), finishes at the printed time: no way of writing does
#    better with this production, and its ratio to the disk's limit (bytes
#    ÷ speed) is the best `create` on that disk can reach here.
# 2. Fixed zstd levels (3, 6, 9): wall time and CPU seconds onto the fast
#    disk, bytes against `tar | zstd -T0 -3`'s, and the cores a level needs
#    to keep up with the disk (its CPU seconds ÷ the disk's time).
# Usage: sudo bench/slowdisk-bound.sh [RUNS=3] [WRITE_MIBS=80]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
wmibs=${2:-80}
bench=${CROSSBACK_SHARED:-$here/../shared}/bench
bin=$here/target/release/crossback
(cd "$here" && cargo build --release --locked -q)
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/crossback-bound.XXXXXX")
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
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mkfs_mount() { # IMAGE SIZE MOUNTPOINT
  truncate -s "$2" "$1"; mkfs.ext4 -q -F "$1"
  local l; l=$(losetup --find --show "$1"); loops+=("$l")
  mkdir -p "$3"; mount "$l" "$3"; mounts+=("$3")
}

mkfs_mount "$work/src.img" 8G "$work/src"
bash "$bench/make-rootfs.sh" "$work/src/deb" | tail -1
(shopt -s dotglob; mv "$work/src"/deb/* "$work/src/"; rmdir "$work/src/deb")
python3 "$bench/make-tree.py" "$work/src/tree" --scale 1 | tail -1
mkfs_mount "$work/out.img" 8G "$work/out"
(cd "$work/src" && tar --xattrs --xattrs-include='*' --acls --sparse --numeric-owner -cf - . 2>/dev/null | zstd -q -T0 -3 > "$work/out/peer.tar.zst")
peer=$(stat -c %s "$work/out/peer.tar.zst")
rm "$work/out/peer.tar.zst"

# Runs `crossback archive create` (args: extra options), sampling the
# archive's length; prints "WALL CPU BYTES" and leaves the samples in
# $work/curve (seconds, bytes per line).
sampled_create() {
  python3 - "$bin" "$work/src" "$work/out/a.tar.zst" "$work/curve" "$@" <<'EOF'
import os, resource, subprocess, sys, time
binary, src, out, curve, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
start = time.monotonic()
p = subprocess.Popen([binary, "archive", "create", src, "-o", out, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
samples, fd = [], None
while p.poll() is None:
    try:
        if fd is None:
            for f in os.listdir(f"/proc/{p.pid}/fd"):
                if os.readlink(f"/proc/{p.pid}/fd/{f}").startswith(out):
                    fd = f
        if fd is not None:
            with open(f"/proc/{p.pid}/fdinfo/{fd}") as info:
                samples.append((time.monotonic() - start, int(info.readline().split()[1])))
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        pass
    time.sleep(0.01)
wall = time.monotonic() - start
if p.returncode != 0:
    sys.exit(f"crossback archive create failed ({p.returncode})")
size = os.stat(out).st_size
samples.append((wall, size))
with open(curve, "w") as f:
    for t, n in samples:
        f.write(f"{t:.4f} {n}\n")
use = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{wall:.3f} {use.ru_utime + use.ru_stime:.3f} {size}")
EOF
}

# The finish time of a disk of RATE bytes/s fed by the curve, with at most
# BUFFER bytes made and not yet written (the maker waits beyond that).
bound() { # BUFFER_BYTES
  python3 - "$work/curve" "$1" "$((wmibs * 1048576))" <<'EOF'
import sys
curve, buffer, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
pts = [tuple(map(float, line.split())) for line in open(curve)]
disk, shift, last = 0.0, 0.0, 0.0
for t, made in pts:
    t += shift
    disk = min(made, disk + (t - last) * rate)
    if made - disk > buffer:
        wait = (made - disk - buffer) / rate
        shift, t, disk = shift + wait, t + wait, made - buffer
    last = t
print(f"{last + (pts[-1][1] - disk) / rate:.3f}")
EOF
}

declare -A t
for i in $(seq "$runs"); do
  for level in 3 6 9; do
    rm -f "$work/out/a.tar.zst"; drop
    read -r wall cpu size < <(sampled_create --level "$level")
    t[wall-$level]+="$wall "; t[cpu-$level]+="$cpu "; t[size-$level]=$size
    if [ "$level" = 3 ]; then
      t[b64]+="$(bound $((64 << 20))) "
      t[binf]+="$(bound 1e18) "
      t[limit]=$(echo "$size / ($wmibs * 1048576)" | bc -l)
    fi
  done
done

m() { echo ${t[$1]} | tr ' ' '\n' | median; }
limit=${t[limit]}
echo
echo "$(nproc) cores; the slow disk: $wmibs MiB/s written; the level-3 archive's limit there: $(printf %.2f "$limit") s"
echo "| made onto a fast disk, then fed to the slow one, median of $runs | s | ÷ the disk's limit |"
echo "| --- | --- | --- |"
printf '| archive made (fast disk, cold) | %.2f | %.2f |\n' "$(m wall-3)" "$(echo "$(m wall-3) / $limit" | bc -l)"
printf '| best finish on the slow disk, 64 MiB between maker and disk | %.2f | %.2f |\n' "$(m b64)" "$(echo "$(m b64) / $limit" | bc -l)"
printf '| best finish on the slow disk, unlimited buffer | %.2f | %.2f |\n' "$(m binf)" "$(echo "$(m binf) / $limit" | bc -l)"
echo
echo "| level, median of $runs | wall, fast disk (s) | CPU (s) | bytes ÷ tar \| zstd -T0 -3 | cores needed to keep up with the disk |"
echo "| --- | --- | --- | --- | --- |"
for level in 3 6 9; do
  disk_s=$(echo "${t[size-$level]} / ($wmibs * 1048576)" | bc -l)
  printf '| %d | %.2f | %.2f | %.3f | %.1f |\n' "$level" "$(m wall-$level)" "$(m cpu-$level)" "$(echo "${t[size-$level]} / $peer" | bc -l)" "$(echo "$(m cpu-$level) / $disk_s" | bc -l)"
done
echo
echo "runs: made ${t[wall-3]}; 64 MiB ${t[b64]}; unlimited ${t[binf]}; level 6 ${t[wall-6]}; level 9 ${t[wall-9]}"
