# What the benchmarks share; sourced after `work` (a scratch directory of
# the run) is set. Loop devices made by `disk`, mounts added to `mnts` and
# processes added to `pids` are undone when the script ends, however it ends.
loops=(); mnts=(); pids=()
cleanup() {
  set +e
  # Servers get 10 s to stop, then are killed (a SeaweedFS filer may not stop on TERM).
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for _ in $(seq 100); do
    alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break; sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  for ((i=${#mnts[@]}-1; i>=0; i--)); do umount "${mnts[i]}" 2>/dev/null; done
  for l in "${loops[@]}"; do blockdev --setrw "$l"; losetup -d "$l"; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT INT TERM
# disk NAME SIZE: an ext4 image under $work on a loop device, in $DEV.
disk() { truncate -s "$2" "$work/$1.img"; mkfs.ext4 -q -F "$work/$1.img"; DEV=$(losetup --find --show "$work/$1.img"); loops+=("$DEV"); }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
