#!/bin/sh
# crossback's rescue system (written by `crossback media rescue`): on the
# kernel's `crossback.rescue`, crossback instead of a root filesystem.
PREREQ="udev"
prereqs() { echo "$PREREQ"; }
case "$1" in prereqs) prereqs; exit 0 ;; esac
grep -qw crossback.rescue /proc/cmdline || exit 0
mkdir -p /tmp /var/tmp /mnt
mount -t tmpfs -o mode=1777 tmpfs /tmp 2>/dev/null
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
echo
echo "crossback rescue: $(crossback --version)"
# Secure Boot as the firmware says it (its variable's last byte), else as
# the kernel logged it when it read that variable.
modprobe -q efivarfs 2>/dev/null
mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
sb=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
if [ -r "$sb" ]; then
  [ "$(tail -c 1 "$sb")" = "$(printf '\001')" ] && state=on || state=off
elif dmesg | grep -q "Secure boot enabled"; then
  state=on
elif [ -d /sys/firmware/efi ]; then
  state=off
else
  state="off (not started by UEFI firmware)"
fi
echo "crossback rescue: Secure Boot: $state"
echo "crossback rescue: ready; a shell follows (crossback's commands are in it; 'reboot -f' to leave)"
/bin/sh -i </dev/console >/dev/console 2>&1
reboot -f
