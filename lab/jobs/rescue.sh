# The `rescue` scenario's guest side (run.sh on the job disk, run by
# lab-job at multi-user in system A): the distribution's signed boot chain
# and busybox installed as a user has them (`apt install shim-signed
# grub-efi-amd64-signed busybox`, the packages on the job disk: no network), then
# `crossback media rescue` onto the backup disk's rescue partition. Lines
# starting with "rescue:" are the host's to check.
JOB=rescue
. ./lib.sh                   # env: SLOT_A, SLOT_B: the backup disk's UUIDs

case "$phase:$me" in
  setup:system-a)
    install_crossback
    run dpkg -i ./sb-*.deb > dpkg.out 2>&1 || { cat dpkg.out; fail "installing the signed boot chain"; }
    part=$(blkid -t PARTLABEL=crossback-rescue -o device | head -1)
    [ -b "$part" ] || fail "no rescue partition on the backup disk: $(blkid)"
    # Refused, nothing written: a slot of the media, a partition holding a filesystem.
    run crossback init --yes || fail "init"
    run crossback media prepare "$SLOT_A" "$SLOT_B" || fail "media prepare"
    slot=$(blkid -U "$SLOT_A")
    run crossback media rescue --device "$slot" --yes; [ $? -ne 0 ] || fail "the rescue was written onto slot A"
    mkfs.ext4 -q -F -L not-yours "$part"
    run crossback media rescue --device "$part" > refused.out 2>&1; rc=$?; cat refused.out
    [ $rc -ne 0 ] && grep -q "target-not-empty" refused.out || fail "the rescue formatted a partition holding ext4 unasked"
    [ "$(blkid -s LABEL -o value "$part")" = not-yours ] || fail "a refused rescue touched the partition"
    run_into rescue.out crossback media rescue --device "$part" --yes || fail "media rescue"
    grep -q "boots under Secure Boot" rescue.out || fail "the rescue does not say it boots under Secure Boot"
    say "$(grep -o 'the rescue system is on.*' rescue.out)"
    # Again, onto its own rescue: no question, the files replaced.
    run crossback media rescue --device "$part" || fail "media rescue over its own rescue"
    sync
    touch done-setup
    systemctl poweroff ;;
esac
