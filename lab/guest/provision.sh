#!/bin/sh
# Runs as init (PID 1) in system A's root during the lab's provisioning
# boot: (LAB_PC=luks: makes B's LUKS2 container, volume group and
# filesystems, and puts B's tree on them; LAB_PC=layout: B's /boot is a
# partition of its own;) installs GRUB EFI for A and for
# B (each its own loader directory and
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
esp=$(blkid -U "$ESP")
mount "$esp" /boot/efi
say "GRUB for A"
grub-install --target=x86_64-efi --efi-directory=/boot/efi --bootloader-id=debian-a
update-grub 2>&1 | tail -2
mkdir -p /mnt/b
if [ -n "${B_LUKS:-}" ]; then
  # LAB_PC=luks: B in LVM (vgb: root, swap) on LUKS2, its /boot apart; a
  # cheap PBKDF (TCG is slow). Slot 0: the passphrase; slot 1: the key file
  # B's initramfs unlocks it with.
  modprobe dm_mod; modprobe dm_crypt
  part=$(blkid -t PARTUUID="$B_LUKS" -o device)
  say "LUKS2 on $part"
  printf '%s' "$PASSPHRASE" | cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --iter-time 200 --label B-luks "$part" -
  head -c 64 /dev/urandom > /run/b.key
  printf '%s' "$PASSPHRASE" | cryptsetup luksAddKey --batch-mode --pbkdf pbkdf2 --iter-time 200 --key-file - "$part" /run/b.key
  cryptsetup open --key-file /run/b.key "$part" b_crypt
  pvcreate -q /dev/mapper/b_crypt
  vgcreate -q vgb /dev/mapper/b_crypt
  lvcreate -q -y -L 128M -n swap vgb
  lvcreate -q -y -l 100%FREE -n root vgb
  mkfs.ext4 -q -L B-root /dev/vgb/root
  mkswap -L B-swap /dev/vgb/swap >/dev/null
  mount /dev/vgb/root /mnt/b
  mkdir -p /mnt/b/boot
  mount "$(blkid -U "$B_BOOT")" /mnt/b/boot
  tar --xattrs --xattrs-include='*' --acls --numeric-owner -C /mnt/b -xpf /b-root.tar
  rm -f /b-root.tar
  cat > /mnt/b/etc/fstab <<EOF
UUID=$(blkid -s UUID -o value /dev/vgb/root) / ext4 errors=remount-ro 0 1
UUID=$B_BOOT /boot ext4 defaults 0 2
UUID=$ESP /boot/efi vfat umask=0077 0 1
UUID=$(blkid -s UUID -o value /dev/vgb/swap) none swap sw 0 0
EOF
  mkdir -p /mnt/b/etc/cryptsetup-keys.d
  install -m 0600 /run/b.key /mnt/b/etc/cryptsetup-keys.d/b_crypt.key
  echo "b_crypt UUID=$(blkid -s UUID -o value "$part") /etc/cryptsetup-keys.d/b_crypt.key luks,discard" > /mnt/b/etc/crypttab
  # The key file goes into the initramfs (cryptsetup-initramfs), which stays unreadable to users.
  echo 'KEYFILE_PATTERN="/etc/cryptsetup-keys.d/*.key"' >> /mnt/b/etc/cryptsetup-initramfs/conf-hook
  echo 'UMASK=0077' >> /mnt/b/etc/initramfs-tools/initramfs.conf
  for d in dev dev/pts proc sys sys/firmware/efi/efivars run; do mount --bind "/$d" "/mnt/b/$d"; done
  mount "$esp" /mnt/b/boot/efi
  chroot /mnt/b update-initramfs -u -k all 2>&1 | tail -3
  lsinitramfs "$(ls /mnt/b/boot/initrd.img-* | tail -1)" > /run/b-initramfs.list
  grep -q 'cryptroot/keyfiles/b_crypt.key' /run/b-initramfs.list || fail "B's initramfs has no key file"
  grep -qE 'sbin/cryptsetup$' /run/b-initramfs.list && grep -qE 'sbin/lvm$' /run/b-initramfs.list || fail "B's initramfs has no cryptsetup or lvm"
elif [ -n "${B_BOOT:-}" ]; then
  # LAB_PC=layout: B on ext4, its /boot apart.
  mount "$(blkid -U "$B")" /mnt/b
  mount "$(blkid -U "$B_BOOT")" /mnt/b/boot
  for d in dev dev/pts proc sys sys/firmware/efi/efivars run; do mount --bind "/$d" "/mnt/b/$d"; done
  mount "$esp" /mnt/b/boot/efi
else
  b=$(blkid -U "$B")
  mount -o subvol=@ "$b" /mnt/b
  for d in dev dev/pts proc sys sys/firmware/efi/efivars run; do mount --bind "/$d" "/mnt/b/$d"; done
  mount "$esp" /mnt/b/boot/efi
fi
say "GRUB for B"
chroot /mnt/b grub-install --target=x86_64-efi --efi-directory=/boot/efi --bootloader-id=debian-b
chroot /mnt/b update-grub 2>&1 | tail -2
# The NVRAM order: A first.
a_num=$(efibootmgr | sed -n 's/^Boot\([0-9A-F]*\)\* debian-a$/\1/p')
b_num=$(efibootmgr | sed -n 's/^Boot\([0-9A-F]*\)\* debian-b$/\1/p')
efibootmgr -o "$a_num,$b_num" >/dev/null
efibootmgr
for d in boot/efi run sys/firmware/efi/efivars sys proc dev/pts dev; do umount "/mnt/b/$d"; done
if [ -n "${B_LUKS:-}" ]; then
  grep -q 'root=/dev/mapper/vgb-root' /mnt/b/boot/grub/grub.cfg || fail "B's grub.cfg does not boot from vgb-root"
  umount /mnt/b/boot /mnt/b
  vgchange -q -an vgb
  cryptsetup close b_crypt
elif [ -n "${B_BOOT:-}" ]; then
  umount /mnt/b/boot /mnt/b
else
  umount /mnt/b
fi
umount /boot/efi
rm -f /provision.env
# A's root read-only before the power cut: its journal written back, so
# GRUB (which replays no journal) finds grub.cfg where update-grub renamed it.
udevadm control --exit 2>/dev/null || true
sync
mount -o remount,ro /
trap - EXIT
say "OK"
echo o > /proc/sysrq-trigger
sleep 10
