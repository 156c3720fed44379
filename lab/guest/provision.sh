#!/bin/sh
# Runs as init (PID 1) in system A's root during the lab's provisioning
# boot: installs GRUB EFI for A and for B (each its own loader directory and
# NVRAM entry; no fallback loader EFI/BOOT/BOOTX64.EFI, as Debian installs
# it by default), then powers off.
# Every step is echoed to the serial console; the last line says OK.
set -eu
say() { echo "provision: $*"; }
fail() { say "FAILED: $*"; sync; echo o > /proc/sysrq-trigger; sleep 10; }
trap 'fail "a step failed (see above)"' EXIT
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
# The initramfs moved /proc, /sys and /dev here already; mount what is missing.
on() { mountpoint -q "$2" || mount -t "$1" "$1" "$2"; }
on proc /proc
on sysfs /sys
on devtmpfs /dev
mkdir -p /dev/pts /run
on devpts /dev/pts
on tmpfs /run
on efivarfs /sys/firmware/efi/efivars
set -x
. /provision.env
udevadm_settle() { [ -x /lib/systemd/systemd-udevd ] && { /lib/systemd/systemd-udevd --daemon; udevadm trigger; udevadm settle; } || true; }
udevadm_settle
esp=$(blkid -U "$ESP"); b=$(blkid -U "$B")
say "ESP $esp, B $b"
mount "$esp" /boot/efi
say "GRUB for A"
grub-install --target=x86_64-efi --efi-directory=/boot/efi --bootloader-id=debian-a
update-grub 2>&1 | tail -2
say "GRUB for B"
mkdir -p /mnt/b
mount -o subvol=@ "$b" /mnt/b
for d in dev dev/pts proc sys sys/firmware/efi/efivars run; do mount --bind "/$d" "/mnt/b/$d"; done
mount "$esp" /mnt/b/boot/efi
chroot /mnt/b grub-install --target=x86_64-efi --efi-directory=/boot/efi --bootloader-id=debian-b
chroot /mnt/b update-grub 2>&1 | tail -2
# The NVRAM order: A first.
a_num=$(efibootmgr | sed -n 's/^Boot\([0-9A-F]*\)\* debian-a$/\1/p')
b_num=$(efibootmgr | sed -n 's/^Boot\([0-9A-F]*\)\* debian-b$/\1/p')
efibootmgr -o "$a_num,$b_num" >/dev/null
efibootmgr
for d in boot/efi run sys/firmware/efi/efivars sys proc dev/pts dev; do umount "/mnt/b/$d"; done
umount /mnt/b /boot/efi
rm -f /provision.env
sync
trap - EXIT
say "OK"
echo o > /proc/sysrq-trigger
sleep 10
