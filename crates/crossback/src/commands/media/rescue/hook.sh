#!/bin/sh
# initramfs-tools hook of crossback's rescue system (written by
# `crossback media rescue`): crossback and the tools a restore runs.
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in prereqs) prereqs; exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
here=$(dirname "$0")/..
copy_exec "$here/crossback" /usr/sbin/crossback
# The system's own programs, not busybox's applets of the same names
# (busybox's mkfs.ext4 is not there, its blkid and mkswap know less):
# copy_exec keeps what is there already, so that goes first.
for tool in sfdisk partx wipefs blkid blockdev losetup chroot \
    mkfs.ext4 mke2fs e2fsck tune2fs dumpe2fs mkfs.xfs xfs_admin xfs_db xfs_repair \
    mkfs.btrfs btrfs btrfstune mkfs.vfat fsck.vfat mkswap swaplabel \
    efibootmgr cryptsetup lvm dmsetup setpriv unshare flock udevadm; do
  p=$(command -v "$tool" 2>/dev/null) || continue
  rm -f "$DESTDIR$p"
  copy_exec "$(readlink -f "$p")" "$p"
done
# mount and umount: the initramfs's own scripts use them; busybox's stay
# when it has them.
for tool in mount umount; do
  p=$(command -v "$tool" 2>/dev/null) && copy_exec "$p"
done
# lvm's and cryptsetup's own libraries and configuration, when present.
[ -e /etc/lvm/lvm.conf ] && mkdir -p "$DESTDIR/etc/lvm" && cp /etc/lvm/lvm.conf "$DESTDIR/etc/lvm/"
manual_add_modules vfat nls_cp437 nls_ascii nls_utf8 ext4 xfs btrfs dm_crypt dm_mod efivarfs
# Firmware only when asked (`media rescue --firmware`): this hook runs after
# the distribution's, so what they added goes too.
if [ ! -e "$here/keep-firmware" ]; then
  rm -rf "$DESTDIR/usr/lib/firmware" "$DESTDIR/lib/firmware"
fi
exit 0
