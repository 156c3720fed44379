#!/usr/bin/env bash
# The lab: a real (virtual) PC under QEMU + OVMF, built once and cached
# (lab/build-pc.sh). Usage (as root): scripts/lab.sh [SCENARIO]
#
# Scenarios:
#   boot   the dual-boot PC: A boots to multi-user from the firmware's first
#          entry, sets BootNext to B and reboots; B boots to multi-user.
# The last line is `lab: OK: …` or `lab: FAILED: …` with the reason.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/lab/lib.sh"
scenario=${1:-boot}
[ "$(id -u)" -eq 0 ] || die "run as root (loop devices, debootstrap)"
t0=$(date +%s)
"$here/lab/build-pc.sh"
say "virtual PC ready in $(( $(date +%s) - t0 )) s"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/crossback-lab.XXXXXX")
trap 'rm -rf --one-file-system "$work"' EXIT
cp --sparse=always "$LAB_CACHE/pc.raw" "$work/pc.raw"
cp "$LAB_CACHE/vars.fd" "$work/vars.fd"

# The job disk: run.sh for the guests, results read back with debugfs.
job_disk() { # SCRIPT
  truncate -s 64M "$work/job.raw"
  mkfs.ext4 -q -F -L LABJOB "$work/job.raw"
  printf '%s\n' "$1" > "$work/run.sh"
  debugfs -w -R "write $work/run.sh run.sh" "$work/job.raw" >/dev/null 2>&1
}

boot_pc() { # TIMEOUT [EXTRA QEMU ARGS…]: boots until the guest powers off
  local t=$1; shift
  run_qemu "$work/console.log" "$t" \
    -drive if=pflash,format=raw,readonly=on,file="$OVMF_CODE" -drive if=pflash,format=raw,file="$work/vars.fd" \
    -drive file="$work/pc.raw",format=raw,if=virtio \
    -drive file="$work/job.raw",format=raw,if=virtio \
    -serial "file:$work/job.log" -action reboot=reset "$@"
}

case $scenario in
  boot)
    job_disk '
      set -e
      . /etc/os-release
      echo "lab-job: in $(hostname): $PRETTY_NAME, kernel $(uname -r), $(systemctl is-system-running || true)"
      if [ "$(hostname)" = system-a ]; then
        b=$(efibootmgr | sed -n "s/^Boot\([0-9A-F]*\)\* debian-b\$/\1/p")
        efibootmgr --bootnext "$b" >/dev/null
        echo "lab-job: BootNext=$b (debian-b); rebooting"
        sync; systemctl reboot
      else
        sync; systemctl poweroff
      fi'
    t1=$(date +%s)
    boot_pc 900
    cat "$work/job.log" >&2 || true
    grep -q "lab-job: in system-a: Debian GNU/Linux 12" "$work/job.log" || { tail -40 "$work/console.log" >&2; die "A did not reach multi-user"; }
    grep -q "lab-job: in system-b: Debian GNU/Linux 13" "$work/job.log" || { tail -40 "$work/console.log" >&2; die "B did not boot after A set BootNext"; }
    echo "lab: OK: A (Debian 12, ext4) and B (Debian 13, btrfs) boot to multi-user under OVMF from their own NVRAM entries ($(( $(date +%s) - t1 )) s for both boots)"
    ;;
  *) die "no scenario $scenario (see scripts/lab.sh's header)" ;;
esac
