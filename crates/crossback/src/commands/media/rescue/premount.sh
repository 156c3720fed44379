#!/bin/sh
# crossback's rescue system (written by `crossback media rescue`): on the
# kernel's `crossback.rescue`, crossback instead of a root filesystem.
PREREQ="udev"
prereqs() { echo "$PREREQ"; }
case "$1" in prereqs) prereqs; exit 0 ;; esac
grep -qw crossback.rescue /proc/cmdline || exit 0
mkdir -p /tmp /var/tmp /mnt
mount -t tmpfs -o mode=1777 tmpfs /tmp 2>/dev/null
mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
echo
echo "crossback rescue: $(crossback --version)"
# The firmware's word on Secure Boot: the variable's last byte.
sb=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
if [ -e "$sb" ] && [ "$(od -An -tu1 -j4 -N1 "$sb" | tr -d ' ')" = 1 ]; then
  echo "crossback rescue: Secure Boot: on"
else
  echo "crossback rescue: Secure Boot: off"
fi
echo "crossback rescue: ready; a shell follows (crossback's commands are in it; 'reboot -f' to leave)"
/bin/sh -i </dev/console >/dev/console 2>&1
reboot -f
