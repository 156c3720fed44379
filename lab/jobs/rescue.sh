# The `rescue` scenario's guest side (run.sh on the job disk, run by
# lab-job at multi-user in the systems): A installs the distribution's
# signed boot chain and busybox as a user has them (`apt install
# shim-signed grub-efi-amd64-signed busybox`, the packages on the job disk:
# no network), makes the blank backup disk the media with `media prepare
# --disk` (encrypted; the rescue system made on it) and backs up B; B backs
# up A. After the host's guided restore from the rescue, each restored
# system checks it is as it was (A again when it boots through the
# fallback loader). Lines starting with "rescue:" are the
# host's to check.
JOB=rescue
. ./lib.sh                   # env: BACKUP (the backup disk), PASSPHRASE

# The encrypted media's passphrase, in memory only; a cheap scrypt: TCG
# takes minutes for age's default.
pass=/run/crossback-lab-pass
printf '%s\n' "$PASSPHRASE" > "$pass"
export CROSSBACK_SCRYPT_WORK_FACTOR=12

case "$phase:$me" in
  setup:system-a)
    install_crossback
    run dpkg -i ./sb-*.deb > dpkg.out 2>&1 || { cat dpkg.out; fail "installing the signed boot chain"; }
    state > state-before-system-a
    run crossback init --yes || fail "init"
    # Refused, nothing written: the disk holds two filesystems, and no one
    # said yes (no terminal to ask on).
    run crossback media prepare --disk "$BACKUP" > refused.out 2>&1; rc=$?; cat refused.out
    [ $rc -ne 0 ] && grep -q "target-not-empty" refused.out || fail "media prepare --disk erased a disk holding filesystems, unasked"
    [ "$(blkid -s LABEL -o value "${BACKUP}1")" = slot-a ] || fail "a refused media prepare --disk touched the disk"
    run_into prepare.out env CROSSBACK_PASSPHRASE_FILE="$pass" crossback media prepare --disk "$BACKUP" --encrypt --yes || fail "media prepare --disk"
    grep -q "boots under Secure Boot" prepare.out || fail "media prepare --disk made no rescue that boots under Secure Boot"
    say "$(grep -o 'the rescue system is on.*' prepare.out)"
    part=$(blkid -t LABEL=CB-RESCUE -o device | head -1)
    [ -b "$part" ] || fail "no rescue partition on the backup disk: $(blkid)"
    # A slot of the media is refused for the rescue.
    slot=$(blkid -t LABEL=crossback-A -o device | head -1)
    run crossback media rescue --device "$slot" --yes; [ $? -ne 0 ] || fail "the rescue was written onto slot A"
    run crossback backup || fail "backup in A"
    touch done-a
    boot_into debian-b ;;
  setup:system-b)
    install_crossback
    state > state-before-system-b
    run crossback init --yes --passphrase-file "$pass" || fail "init in B"
    run crossback backup || fail "backup in B"
    run_into status.out crossback status || fail "status"
    grep -q "^rescue system: .*boots under Secure Boot" status.out || fail "status says nothing of the rescue system"
    say "$(grep '^rescue system:' status.out)"
    touch done-setup
    sync; systemctl poweroff ;;
  restored:system-a|restored:system-b)
    restored_phase ;;
  fallback:system-a)
    fallback_phase ;;
  *)
    fail "nothing to do in phase $phase" ;;
esac
