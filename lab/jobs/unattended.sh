# The `self` and `plug` scenarios' guest side (run.sh on the job disk, run
# by lab-job at multi-user in system A): the phase the host wrote (file
# `phase`) says what to do. Lines starting with "unattended:" are the
# host's to check; files left on the job disk say which steps finished.
JOB=unattended
. ./lib.sh                   # env: SLOT_A, SLOT_B: the backup disk's UUIDs

case "$phase:$me" in
  setup:system-a)
    install_crossback
    run crossback init --yes || fail "init"
    run crossback media prepare "$SLOT_A" "$SLOT_B" || fail "media prepare"
    run crossback backup || fail "backup of B"
    run crossback status | grep -q "missing $A" || fail "generation 1 should miss A (running)"
    # What A holds now: compared with its backup made at the next boot.
    echo "marker $(date +%s%N)" > /lab-data/self-marker
    lab-data-state / > self-state-before
    touch done-setup
    say "arming the backup of A at reboot"
    sync
    run crossback backup --at-reboot || fail "backup --at-reboot"
    sleep 600 ;;   # the reboot comes
  check:system-a)
    run crossback status > status.out 2>&1; cat status.out
    test -e /system-update && fail "/system-update is still there"
    grep -q "last backup at reboot: .*: done" status.out || fail "status does not show the backup at reboot as done"
    grep -Eq "generation 1: sealed .*complete" status.out || fail "generation 1 is not sealed"
    grep -Eq "$A +last backed up .*at reboot" status.out || fail "status does not show A backed up at reboot"
    findmnt -n -o OPTIONS / | grep -q '^rw' || fail "/ is not writable after the backup boot"
    # A's backup, restored beside it: the files that were not changing.
    rm -rf /var/tmp/r
    run crossback restore "$A" --to /var/tmp/r /etc /usr/bin /lab-data /home || fail "restore of A's backup"
    lab-data-state /var/tmp/r > self-state-restored
    diff self-state-before self-state-restored || fail "xattr, capability, hard links or machine-id differ in A's backup"
    cmp /lab-data/self-marker /var/tmp/r/lab-data/self-marker || fail "the marker written before the reboot is not in A's backup"
    # /etc: what systemd changes at boot is not A's to compare.
    diff -r --no-dereference -x adjtime -x machine-id /etc /var/tmp/r/etc > diff-etc.out 2>&1
    d_etc=$?
    diff -r --no-dereference /usr/bin /var/tmp/r/usr/bin > diff-usr.out 2>&1
    d_usr=$?
    diff -r --no-dereference /home /var/tmp/r/home > diff-home.out 2>&1
    d_home=$?
    cat diff-etc.out diff-usr.out diff-home.out
    [ $d_etc = 0 ] && [ $d_usr = 0 ] && [ $d_home = 0 ] || fail "A's backup at reboot differs from A"
    say "backed up at reboot, sealed, restored: 0 differences in /etc, /usr/bin, /home, /lab-data ($(find /var/tmp/r | wc -l) entries)"
    rm -rf /var/tmp/r
    # The failure case: armed again, and the backup disk will be gone.
    run crossback backup --at-reboot --no-reboot --disk-wait 20 || fail "arming again"
    test -L /system-update || fail "no /system-update link after arming"
    touch done-check
    sync; systemctl poweroff ;;
  nodisk:system-a)
    run crossback status > status.out 2>&1; cat status.out
    test -e /system-update && fail "/system-update is still there after the failed backup boot"
    grep -q "last backup at reboot: .*: FAILED — the backup disk did not appear" status.out || fail "status does not show why the backup at reboot failed"
    grep -q "backup at reboot: ARMED" status.out && fail "the failed backup is still armed"
    say "without the backup disk: a normal boot, $(systemctl is-system-running), and status says why"
    # Next: something holds a file on / open for writing in the backup's boot.
    cat > /etc/systemd/system/lab-writer.service <<'UNIT'
[Unit]
Description=lab: hold a file on / open for writing in the backup boot
DefaultDependencies=no
After=local-fs.target
Before=crossback-at-reboot.service

[Service]
ExecStart=/bin/sh -c 'exec 3>>/var/tmp/lab-held; exec sleep 3600'
UNIT
    mkdir -p /etc/systemd/system/system-update.target.wants
    ln -sf ../lab-writer.service /etc/systemd/system/system-update.target.wants/lab-writer.service
    run crossback backup --at-reboot --no-reboot --disk-wait 30 || fail "arming with a writer"
    touch done-nodisk
    sync; systemctl poweroff ;;
  busy:system-a)
    rm -f /etc/systemd/system/system-update.target.wants/lab-writer.service /etc/systemd/system/lab-writer.service
    run crossback status > status.out 2>&1; cat status.out
    test -e /system-update && fail "/system-update is still there after the refused backup boot"
    grep -q "last backup at reboot: .*: FAILED — debian-bookworm's / could not be made read-only .*open for writing: sleep (pid [0-9]*) writing /var/tmp/lab-held" status.out || fail "status does not name what kept / writable"
    grep -A1 "^  B " status.out | grep -q "no generation yet" || fail "something was written to slot B"
    for m in / /home /boot/efi; do findmnt -n -o OPTIONS "$m" | grep -q '^rw' || fail "$m is not writable after the refused backup boot"; done
    say "a writer on /: the backup boot refused, named it, nothing written, everything writable, a normal boot"
    touch done-busy
    sync; systemctl poweroff ;;
  plug-setup:system-a)
    install_crossback
    run crossback init --yes || fail "init"
    run crossback media prepare "$SLOT_A" "$SLOT_B" || fail "media prepare"
    # A plain media: plug-in backups only by the user's choice (a stick
    # given the slots' UUIDs would get the systems in plaintext).
    crossback schedule --remind-after 3 > refused.out 2>&1 && fail "schedule accepted a plain media without --unencrypted"
    grep -q "error\[not-encrypted\]" refused.out || { cat refused.out; fail "schedule's refusal of a plain media is not not-encrypted"; }
    test -e /etc/systemd/system/crossback-plugged.service && fail "a refused schedule installed the plug-in unit"
    run crossback schedule --unencrypted --remind-after 3 || fail "schedule"
    grep -q "backup --plugged --unencrypted" /etc/systemd/system/crossback-plugged.service || fail "the plug-in unit does not carry the user's choice"
    run crossback status | grep -q "scheduled: a backup when the backup disk is plugged in" || fail "status does not show the schedule"
    systemctl is-enabled crossback-remind.timer || fail "the reminder timer is not enabled"
    touch done-plug-setup
    sync; systemctl poweroff ;;
  plug:system-a)
    blkid -U "$SLOT_A" >/dev/null && fail "the backup disk is attached before it is plugged in"
    # No backup known here yet: the reminder says to plug in the disk.
    run systemctl start crossback-remind.service
    journalctl -u crossback-remind --no-pager | grep -q "Backup reminder: no backup of this machine is known here" || fail "no reminder in the journal"
    say "ready for the backup disk"
    t=0
    until journalctl -u crossback-plugged --no-pager | grep -Eq "Backup (finished|failed)"; do
      t=$((t + 2)); [ $t -lt 900 ] || fail "no plug-in backup within 900 s"
      sleep 2
    done
    journalctl -u crossback-plugged --no-pager -o cat > plugged.out; cat plugged.out
    grep -q "Backup started" plugged.out || fail "no start record in the journal"
    grep -q "Backup finished: generation 1 in slot A: open, missing $A" plugged.out || fail "the plug-in backup did not back up B"
    run crossback status > status.out 2>&1; cat status.out
    grep -Eq "$B +last backed up .*plugged in" status.out || fail "status does not show B backed up when plugged in"
    say "plugged in: B backed up by itself, $(grep -c . plugged.out) lines in the journal"
    touch done-plug
    sync; systemctl poweroff ;;
  *)
    fail "nothing to do in phase $phase" ;;
esac
