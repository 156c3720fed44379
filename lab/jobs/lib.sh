# What every lab job (run.sh on the job disk, run by lab-job at multi-user)
# starts with: the job's environment, the phase the host wrote (file
# `phase`), which system this is, and how to say, fail, run and reboot.
# A job sets JOB (the prefix of its lines the host checks: "JOB: SYSTEM: …")
# and then sources this file: `. ./lib.sh`.
set -u
. ./env
phase=$(cat phase)
me=$(hostname)
say() { echo "$JOB: $me: $*"; }
fail() { say "FAILED: $*"; sync; systemctl poweroff; exit 1; }
run() { # COMMAND…: shown with its output and exit code
  echo "+ $*"
  "$@" 2>&1
  rc=$?
  echo "= exit $rc"
  return $rc
}
# Runs COMMAND… with its output kept in FILE (and shown); its exit code.
run_into() { # FILE COMMAND…
  f=$1; shift
  echo "+ $*"
  "$@" > "$f" 2>&1; rc=$?; cat "$f"; echo "= exit $rc"
  return $rc
}
# The number of the firmware entry LABEL (efibootmgr 17 prints the label
# alone, 18 the label, a tab and the device path).
entry() { efibootmgr | grep -E "^Boot[0-9A-F]{4}\* $1([[:space:]]|\$)" | head -1 | cut -c5-8; }
boot_into() { # LABEL: BootNext, then power off: the host starts the next boot
  # (a new QEMU each boot: TCG's reset hangs now and then in the firmware).
  n=$(entry "$1")
  [ -n "$n" ] || fail "no firmware entry $1: $(efibootmgr | tr '\n' ' ')"
  efibootmgr --bootnext "$n" >/dev/null
  say "rebooting into $1"
  sync; systemctl poweroff; exit 0
}
install_crossback() {
  command -v crossback >/dev/null || run dpkg -i ./crossback.deb || fail "dpkg -i crossback"
}
A=debian-bookworm
B=debian-trixie
# The state a restore must bring back: failed units, dpkg --verify, the
# fidelity data; kept per system on the job disk.
state() {
  echo "failed-units: $(systemctl --failed --no-legend --plain | awk '{print $1}' | grep -v '^lab-job' | sort | tr '\n' ' ')"
  echo "dpkg-verify: $(dpkg --verify 2>&1 | sort | tr '\n' ' ')"
  lab-data-state
}
check_restored() {
  state > "state-after-$me-$phase"
  if ! diff "state-before-$me" "state-after-$me-$phase" > "diff-$me-$phase"; then
    cat "diff-$me-$phase"
    fail "the restored system differs from the one backed up (see above)"
  fi
  # The machine-id is the one the system was built with.
  grep -qx "$(head -1 /lab-data/expected)" "state-after-$me-$phase" || fail "machine-id changed"
  say "restored and as before: $(systemctl is-system-running), same failed units, dpkg --verify, machine-id, xattr, capability, hard links"
}
# The phase after a restore: each system checks it is as it was backed up
# (the job's own check_restored); A then boots B, B powers off.
restored_phase() {
  check_restored
  touch "done-$phase-${me#system-}"
  [ "$me" = system-a ] && boot_into debian-b
  sync; systemctl poweroff
}
# The phase after a boot with fresh firmware variables: A, started by the
# fallback loader the restore made, checks it is as it was.
fallback_phase() {
  check_restored
  say "booted through the fallback loader; the firmware has no entry for a loader on a disk partition: $(efibootmgr | grep -c 'HD(') such entries"
  touch done-fallback
  sync; systemctl poweroff
}
