# The dualboot scenario's guest side (run.sh on the job disk, run by
# lab-job at multi-user in every system): what to do depends on the phase
# the host wrote (file `phase`) and on which system this is. Results go to
# the job disk; lines starting with "dualboot:" are the host's to check.
JOB=dualboot
. ./lib.sh                   # env: SLOT_A, SLOT_B (the backup disk's UUIDs), BLANK
# What this boot wrote to the backup disk (the guest's own block counters).
wrote() { [ -r /sys/block/sda/stat ] && say "wrote $(awk '{printf "%.1f", $7 * 512 / 1048576}' /sys/block/sda/stat) MiB to the backup disk in this boot"; }
# The encrypted media's passphrase (from the job's env), in memory only;
# a cheap scrypt: TCG takes minutes for age's default.
pass=/run/crossback-lab-pass
printf '%s\n' "$PASSPHRASE" > "$pass"
export CROSSBACK_SCRYPT_WORK_FACTOR=12

case "$phase:$me" in
  backup:system-a)
    if [ ! -e done-a1 ]; then
      install_crossback
      state > state-before-system-a
      run crossback init --yes || fail "init"
      # An encrypted media: the passphrase only to prepare it;
      # the backups below run with no key at all.
      run env CROSSBACK_PASSPHRASE_FILE="$pass" crossback media prepare "$SLOT_A" "$SLOT_B" --encrypt || fail "media prepare"
      run crossback backup || fail "backup in A"
      run crossback status
      touch done-a1
      wrote
      boot_into debian-b
    else
      run crossback backup || fail "second backup in A"
      run crossback status || fail "status"
      touch done-a2
      wrote
      say "backups done"
      sync; systemctl poweroff
    fi ;;
  backup:system-b)
    install_crossback
    state > state-before-system-b
    run crossback init --yes --passphrase-file "$pass" || fail "init in B"
    grep -q "^\[media\]" /etc/crossback/config.toml || fail "init in B did not take the media's configuration"
    run crossback backup || fail "backup in B"
    run crossback status || fail "status"
    run crossback status | grep -q "encrypted (age)" || fail "the media is not encrypted"
    run crossback verify --passphrase-file "$pass" || fail "verify"
    run crossback backup --new-generation || fail "second round in B"
    touch done-b1
    wrote
    boot_into debian-a ;;
  rescue:rescue)
    # The backup disk carries its own restore tool.
    mkdir -p /mnt/slot && mount -o ro UUID="$SLOT_A" /mnt/slot || fail "mounting slot A"
    run /mnt/slot/crossback/crossback --version || fail "the slot's own crossback does not run"
    cat /mnt/slot/crossback/crossback.version
    umount /mnt/slot
    install_crossback
    run crossback init --yes --passphrase-file "$pass" || fail "init in the rescue system"
    run crossback status
    run_into restore.out crossback restore --bare-metal --disk "$BLANK" --yes --passphrase-file "$pass" || fail "restore --disk"
    grep -q "copied EFI/debian-a/grubx64.efi to EFI/BOOT/BOOTX64.EFI" restore.out || fail "no fallback loader was made from A's loader"
    run efibootmgr -v
    touch done-rescue
    say "restored"
    sync; systemctl poweroff ;;
  newuuids:rescue)
    # A hand-made layout and new UUIDs: crossback repairs GRUB in a chroot.
    printf 'label: gpt\nsize=256MiB, type=U\nsize=3GiB, type=L\nsize=512MiB, type=L\n' | sfdisk -q "$BLANK" || fail "sfdisk"
    udevadm settle
    run_into newuuids.out crossback restore debian-bookworm --bare-metal --new-uuids --yes --passphrase-file "$pass" \
      --device /boot/efi="${BLANK}1" --device /="${BLANK}2" --device /home="${BLANK}3" || fail "restore --new-uuids"
    grep -q "GRUB now finds its new UUIDs (loader EFI/debian-a)" newuuids.out || fail "GRUB was not reinstalled into A's own loader directory"
    run efibootmgr -v
    touch done-newuuids
    say "restored A with new UUIDs"
    sync; systemctl poweroff ;;
  newuuids-boot:system-a)
    check_restored
    say "booted with new UUIDs: / is UUID=$(findmnt -n -o UUID /), /boot/efi UUID=$(findmnt -n -o UUID /boot/efi)"
    touch done-newuuids-a
    sync; systemctl poweroff ;;
  restored:system-a|restored:system-b)
    restored_phase ;;
  fallback:system-a)
    fallback_phase ;;
  *)
    fail "nothing to do in phase $phase" ;;
esac
