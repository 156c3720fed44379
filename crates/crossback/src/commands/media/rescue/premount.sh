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
# The crossback each backup keeps current on this partition, when it runs
# here; else the one in the initramfs.
modprobe -q vfat 2>/dev/null
part=$(blkid -L CB-RESCUE 2>/dev/null)
if [ -n "$part" ] && mkdir -p /run/crossback-rescue && mount -t vfat -o ro "$part" /run/crossback-rescue 2>/dev/null; then
  if /run/crossback-rescue/crossback/crossback --version >/dev/null 2>&1; then
    cp /run/crossback-rescue/crossback/crossback /usr/sbin/crossback.new && mv /usr/sbin/crossback.new /usr/sbin/crossback
  fi
  umount /run/crossback-rescue
fi
# Every console the kernel writes to (the screen, a serial line): the
# rescue speaks on each, and a person answers on one; the media's lock
# keeps a second restore from starting.
consoles=
for c in $(cat /sys/class/tty/console/active 2>/dev/null); do
  [ "$c" = tty0 ] && c=tty1
  consoles="$consoles $c"
done
[ -n "$consoles" ] || consoles=console
tell() { for c in $consoles; do echo "$*" > "/dev/$c"; done; }
tell ""
tell "crossback rescue: $(crossback --version)"
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
tell "crossback rescue: Secure Boot: $state"
tell "crossback rescue: ready"
# The guided restore, then a shell, in turn, on TTY, each with it as the
# controlling terminal (Ctrl-C; the passphrase read from /dev/tty).
guide_on() { # TTY
  [ -c "/dev/$1" ] || return 0
  while sleep 1; do
    setsid -c crossback recover --rescue <>"/dev/$1" >&0 2>&0
    echo "crossback rescue: a shell (crossback's commands are in it): 'exit' goes back to the guided restore, 'reboot -f' restarts the machine" > "/dev/$1"
    setsid -c sh -i <>"/dev/$1" >&0 2>&0
  done
}
set -- $consoles
while [ $# -gt 1 ]; do
  guide_on "$1" &
  shift
done
guide_on "$1"
# That console gone: the others' guides go on.
wait
