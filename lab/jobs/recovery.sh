# The recovery scenario's guest side (run.sh on the job disk, run by
# lab-job at multi-user in every system), on the PC whose A has / on xfs,
# /home on ext4 and a swap partition and whose B has /boot apart: the
# commands are the ones the project's README (a copy on the job disk) and
# the slot's own README.txt say, read from them as a person types them —
# only the device names are this PC's. Lines starting with "recovery:" are
# the host's to check.
JOB=recovery
. ./lib.sh                   # env: SLOT_A, SLOT_B (the backup disk's UUIDs), BLANK

# The commands of the first ```sh block after the README's heading "## HEADING",
# without their comments, one a line; the backup disk is /dev/sda here.
readme_commands() { # HEADING
  awk -v h="## $1" '$0 == h {f = 1; next} f && /^```sh/ {c = 1; next} c && /^```/ {exit} c {print}' README.md |
    sed -e 's/[[:space:]]*#.*$//' -e 's#/dev/sdb#/dev/sda#g' | grep -v '^[[:space:]]*$'
}
# Runs one command line as typed at a terminal (script(1) gives it one),
# where the person answers "yes" when it asks before writing.
typed() { # LINE
  echo "+ $1"
  printf 'yes\n' | script -qec "$1" /dev/null 2>&1
  rc=$?
  echo "= exit $rc"
  return $rc
}
# The state a restore must bring back: failed units, dpkg --verify, the
# fidelity data, the files changed between the rounds, the filesystems and
# the swap; kept per system on the job disk.
state() {
  echo "failed-units: $(systemctl --failed --no-legend --plain | awk '{print $1}' | grep -v '^lab-job' | sort | tr '\n' ' ')"
  echo "dpkg-verify: $(dpkg --verify 2>&1 | sort | tr '\n' ' ')"
  echo "changed: $(cat /etc/lab-round 2>/dev/null) $(sha256sum /home/ann/round.bin 2>/dev/null | cut -c1-16) $(ls /home/ann | tr '\n' ' ')"
  for t in / /home /boot /boot/efi; do
    mountpoint -q "$t" && echo "mount: $t $(findmnt -n -o FSTYPE,UUID "$t")"
  done
  echo "swap: $(swapon --noheadings --show=TYPE | sort | tr '\n' ' ')"
  lab-data-state
}
check_restored() {
  state > "state-after-$me"
  if ! diff "state-before-$me" "state-after-$me" > "diff-$me"; then
    cat "diff-$me"
    fail "the restored system differs from the one backed up (see above)"
  fi
  say "restored and as before: $(systemctl is-system-running), $(grep '^mount: /' "state-after-$me" | head -1), swap: $(swapon --noheadings --show=TYPE | tr '\n' ' '), same failed units, dpkg --verify, changed files, machine-id, xattr, capability, hard links"
}
# Files that change between the backups of a system: a round number in
# /etc, a new random file in /home, a file removed and another made.
change_files() { # ROUND
  echo "round $1 in $me" > /etc/lab-round
  mkdir -p /home/ann
  head -c 1048576 /dev/urandom > /home/ann/round.bin
  rm -f "/home/ann/gone-after-round-$(($1 - 1))"
  echo "$1" > "/home/ann/gone-after-round-$1"
}

case "$phase:$me" in
  backup:system-a)
    if [ ! -e done-a1 ]; then
      install_crossback
      # The README's quick start, typed as it is.
      readme_commands "Quick start on a real machine" > quick-start
      [ "$(wc -l < quick-start)" -ge 3 ] || fail "the README's quick start has no commands: $(cat quick-start)"
      n=0
      while read -r line; do n=$((n + 1)); typed "$line" > "quick-step-$n" 2>&1; rc=$?; cat "quick-step-$n"
        [ "$rc" = 0 ] || fail "the README's '$line' failed (exit $rc)"
      done < quick-start
      # What status said to do next is what the next boot does.
      [ "$(tail -1 quick-start)" = "crossback status" ] || fail "the quick start no longer ends with status"
      grep -q "^to complete generation 1: .*boot into another system (or a live USB) and run \`crossback backup\`" "quick-step-$n" || fail "status did not say how to complete the generation"
      grep -q "no complete backup yet: run" "quick-step-$n" && fail "status tells to run a backup that cannot add this system"
      state > state-before-system-a
      touch done-a1
      boot_into debian-b
    else
      # The second round, after changing files: B's backup (what status said).
      change_files 2
      state > state-before-system-a
      run crossback backup || fail "the second backup in A"
      run crossback status || fail "status"
      touch done-a2
      boot_into debian-b
    fi ;;
  backup:system-b)
    if [ ! -e done-b1 ]; then
      install_crossback
      # "boot into the other system and run crossback backup again";
      # `crossback init` takes the configuration from the media.
      run_into init-b.out crossback init || fail "init in B"
      grep -q "^\[media\]" /etc/crossback/config.toml || fail "init in B did not take the media's configuration"
      run crossback backup || fail "backup in B"
      run crossback status || fail "status"
      change_files 1
      state > state-before-system-b
      touch done-b1
      boot_into debian-a
    else
      run crossback backup || fail "the second backup in B"
      run_into status-b2 crossback status || fail "status"
      grep -q "newest complete backup: generation 2" status-b2 || fail "generation 2 is not the newest complete backup"
      touch done-b2
      say "backups done"
      sync; systemctl poweroff
    fi ;;
  rescue:rescue)
    # The disk died. The backup disk is mounted as a desktop would (read-
    # write, nosuid, nodev), its README.txt read, and its commands typed.
    mnt=/media/root/$SLOT_A
    mkdir -p "$mnt"
    run mount -o nosuid,nodev /dev/sda1 "$mnt" || fail "mounting slot A"
    cat "$mnt/crossback/README.txt"
    grep '^    /media/…/crossback/crossback ' "$mnt/crossback/README.txt" |
      sed -e 's/^ *//' -e 's/ *(.*$//' -e "s#^/media/…#$mnt#" -e "s#/dev/NEWDISK#$BLANK#" > slot-readme-commands
    [ "$(wc -l < slot-readme-commands)" = 2 ] || fail "the slot's README.txt does not say init and restore: $(cat slot-readme-commands)"
    n=0
    while read -r line; do n=$((n + 1)); typed "$line" > "slot-step-$n" 2>&1; rc=$?; cat "slot-step-$n"
      [ "$rc" = 0 ] || fail "the slot's README.txt's '$line' failed (exit $rc)"
    done < slot-readme-commands
    grep -q "not added" slot-step-1 && fail "init in the rescue system named a system it did not add"
    # A check after a correct restore finds nothing different.
    run_into verify.out "$mnt/crossback/crossback" verify --against-source || fail "verify --against-source after the restore (exit $rc)"
    grep -q "generation 2" verify.out || fail "verify --against-source did not say which generation it compared"
    run umount "$mnt" || fail "the slot could not be unmounted after the restore"
    touch done-rescue
    say "restored as the slot's README.txt says"
    sync; systemctl poweroff ;;
  restored:system-a|restored:system-b)
    restored_phase ;;
  *)
    fail "nothing to do in phase $phase" ;;
esac
