#!/usr/bin/env bash
# The lab's virtual dual-boot PC (issue 17), built once and cached:
#   one GPT system disk: ESP (vfat), system A = Debian 12 on ext4 (/) + ext4
#   (/home), system B = Debian 13 on btrfs (subvolumes @ and @home); each with
#   Debian's cloud kernel, systemd, udev and GRUB EFI with its own boot entry.
# The roots are made on the host (debootstrap); GRUB is installed in a
# provisioning boot of the guest (the host has no vfat driver, and grub in a
# host chroot would name the host's loop devices). QEMU with TCG and OVMF.
#
# Usage (as root): lab/build-pc.sh      → $LAB_CACHE/pc.raw, $LAB_CACHE/vars.fd
#
# LAB_PC=luks (issue 13; with its own LAB_CACHE): system B is Debian 13 on
# ext4 in LVM (volume group vgb: root and swap) on LUKS2, with /boot on a
# partition of its own; its initramfs unlocks it with a key file (the
# passphrase in $LAB_CACHE/b.passphrase opens it too). A and the rescue
# system carry cryptsetup and lvm2. The container is made in the
# provisioning boot: the host has no device-mapper.
#
# LAB_PC=layout (with its own LAB_CACHE): a layout the other two do not
# have: system A is Debian 12 with / on xfs, /home on ext4 and a swap
# partition; system B is Debian 13 on ext4 with /boot on a partition of its
# own. A and the rescue system carry xfsprogs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

# The cache is keyed by this script and the guest files: a change rebuilds.
variant=${LAB_PC:-plain}
case $variant in plain|luks|layout) ;; *) die "LAB_PC=$variant: plain, luks or layout" ;; esac
key=$( (echo "$variant"; cat "$here/build-pc.sh" "$here/lib.sh" "$here"/guest/*) | sha256sum | cut -c1-16)
[ -s "$LAB_CACHE/pc.raw" ] && [ -s "$LAB_CACHE/vars.fd" ] && [ -s "$LAB_CACHE/rescue.raw" ] && [ "$(cat "$LAB_CACHE/pc.key" 2>/dev/null)" = "$key" ] && { say "cached: $LAB_CACHE/pc.raw"; exit 0; }
rm -f "$LAB_CACHE/pc.raw" "$LAB_CACHE/vars.fd" "$LAB_CACHE/pc.key"
need_packages qemu-system-x86 ovmf debootstrap btrfs-progs dosfstools e2fsprogs fdisk attr libcap2-bin
mkdir -p "$LAB_CACHE"
work=$(mktemp -d "$LAB_CACHE/build.XXXXXX")
loops=(); mounts=()
cleanup() {
  set +e
  for ((i=${#mounts[@]}-1; i>=0; i--)); do umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}"; done
  for l in "${loops[@]}"; do partx_d "$l" 2>/dev/null; losetup -d "$l" 2>/dev/null; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# The roots, each cached as a tarball (keyed by the package list).
packages=linux-image-cloud-amd64,systemd-sysv,udev,grub-efi-amd64,efibootmgr,btrfs-progs,dosfstools,e2fsprogs,fdisk,zstd,kmod,iproute2,iputils-ping,libcap2-bin,attr,passwd
[ "$variant" = luks ] && packages=$packages,cryptsetup,cryptsetup-initramfs,lvm2
[ "$variant" = layout ] && packages=$packages,xfsprogs
root_tar() { # SUITE NAME
  local tar=$LAB_CACHE/$2-$(echo "$packages" | sha256sum | cut -c1-8).tar
  if [ ! -s "$tar" ]; then
    say "debootstrap $1 for $2 (once)"
    local d=$work/$2
    debootstrap --variant=minbase \
      --include="$packages" \
      "$1" "$d" "$(mirror)" >"$work/$2.log" 2>&1 || { tail -20 "$work/$2.log" >&2; die "debootstrap $1 failed"; }
    rm -f "$d"/var/cache/apt/archives/*.deb
    tar --xattrs --xattrs-include='*' --acls --numeric-owner -C "$d" -cf "$tar.partial" . && mv "$tar.partial" "$tar"
    rm -rf --one-file-system "$d"
  fi
  echo "$tar"
}
tar_a=$(root_tar bookworm system-a)
tar_b=$(root_tar trixie system-b)

say "partitioning the system disk"
disk=$work/pc.raw
truncate -s "${LAB_DISK_MIB}M" "$disk"
{
  printf 'label: gpt\nsize=256MiB, type=U, name="ESP"\nsize=2560MiB, type=L, name="A-root"\nsize=512MiB, type=L, name="A-home"\n'
  case $variant in
    luks) printf 'size=384MiB, type=L, name="B-boot"\n' ;;
    layout) printf 'size=256MiB, type=S, name="A-swap"\nsize=384MiB, type=L, name="B-boot"\n' ;;
  esac
  printf 'type=L, name="B"\n'
} | sfdisk -q "$disk"
dev=$(losetup --find --show "$disk"); loops+=("$dev")
partx -a "$dev"
esp=${dev}p1; a_root=${dev}p2; a_home=${dev}p3; b=${dev}p4
mkfs.vfat -F 32 -n ESP "$esp" >/dev/null
a_type=ext4 a_opts=errors=remount-ro
if [ "$variant" = layout ]; then
  # Without the features Debian 12's GRUB (2.06-13) cannot read: on an xfs
  # with bigtime=1 it stopped at its prompt (seen in this lab). crossback
  # records the features and makes the filesystem again with them.
  a_type=xfs a_opts=defaults
  mkfs.xfs -q -m bigtime=0,inobtcount=0 -L A-root "$a_root"
else
  mkfs.ext4 -q -L A-root "$a_root"
fi
mkfs.ext4 -q -L A-home "$a_home"
case $variant in
  luks) b_boot=${dev}p4; b=${dev}p5; mkfs.ext4 -q -L B-boot "$b_boot" ;;
  layout)
    a_swap=${dev}p4; b_boot=${dev}p5; b=${dev}p6
    mkswap -L A-swap "$a_swap" >/dev/null
    mkfs.ext4 -q -L B-boot "$b_boot"; mkfs.ext4 -q -L B-root "$b" ;;
  *) mkfs.btrfs -q -L B "$b" ;;
esac
uuid() { blkid -p -s UUID -o value "$1"; }

say "system A (Debian 12, / on $a_type)"
m=$work/m; mkdir -p "$m"
mount "$a_root" "$m"; mounts+=("$m")
tar --xattrs --xattrs-include='*' --acls --numeric-owner -C "$m" -xpf "$tar_a"
cat > "$m/etc/fstab" <<EOF
UUID=$(uuid "$a_root") / $a_type $a_opts 0 1
UUID=$(uuid "$a_home") /home ext4 defaults 0 2
UUID=$(uuid "$esp") /boot/efi vfat umask=0077 0 1
EOF
[ "$variant" != layout ] || echo "UUID=$(uuid "$a_swap") none swap sw 0 0" >> "$m/etc/fstab"
prepare_root "$m" system-a
lab_data "$m" system-a
umount "$m"; mounts=("${mounts[@]:0:${#mounts[@]}-1}")

case $variant in
luks)
  # B's tree, made here and put on A's root for the provisioning boot,
  # which makes the LUKS container, the volume group and the filesystems.
  say "system B (Debian 13, ext4 in LVM on LUKS2; its tree for the provisioning boot)"
  bt=$work/b-tree; mkdir -p "$bt"
  tar --xattrs --xattrs-include='*' --acls --numeric-owner -C "$bt" -xpf "$tar_b"
  prepare_root "$bt" system-b
  lab_data "$bt" system-b
  mkdir -p "$bt/home/ann" && echo "B's home" > "$bt/home/ann/notes.txt"
  [ -s "$LAB_CACHE/b.passphrase" ] || echo "lab-luks-$RANDOM$RANDOM" > "$LAB_CACHE/b.passphrase"
  tar --xattrs --xattrs-include='*' --acls --numeric-owner -C "$bt" -cf "$work/b-root.tar" .
  rm -rf --one-file-system "$bt"
  ;;
layout)
  say "system B (Debian 13, ext4, /boot apart)"
  mount "$b" "$m"; mounts+=("$m")
  mkdir -p "$m/boot"; mount "$b_boot" "$m/boot"; mounts+=("$m/boot")
  tar --xattrs --xattrs-include='*' --acls --numeric-owner -C "$m" -xpf "$tar_b"
  cat > "$m/etc/fstab" <<EOF
UUID=$(uuid "$b") / ext4 errors=remount-ro 0 1
UUID=$(uuid "$b_boot") /boot ext4 defaults 0 2
UUID=$(uuid "$esp") /boot/efi vfat umask=0077 0 1
EOF
  prepare_root "$m" system-b
  lab_data "$m" system-b
  mkdir -p "$m/home/ann" && echo "B's home" > "$m/home/ann/notes.txt"
  umount "$m/boot" "$m"; mounts=("${mounts[@]:0:${#mounts[@]}-2}")
  ;;
*)
  say "system B (Debian 13, btrfs @ and @home)"
  mount "$b" "$m"; mounts+=("$m")
  btrfs -q subvolume create "$m/@"; btrfs -q subvolume create "$m/@home"
  tar --xattrs --xattrs-include='*' --acls --numeric-owner -C "$m/@" -xpf "$tar_b"
  cat > "$m/@/etc/fstab" <<EOF
UUID=$(uuid "$b") / btrfs subvol=@ 0 0
UUID=$(uuid "$b") /home btrfs subvol=@home 0 0
UUID=$(uuid "$esp") /boot/efi vfat umask=0077 0 1
EOF
  prepare_root "$m/@" system-b
  lab_data "$m/@" system-b
  mkdir -p "$m/@home/ann" && echo "B's home" > "$m/@home/ann/notes.txt"
  umount "$m"; mounts=("${mounts[@]:0:${#mounts[@]}-1}")
  ;;
esac

say "the rescue system (Debian 12 on a disk of its own, neither A nor B)"
rescue=$work/rescue.raw
truncate -s 2G "$rescue"
mkfs.ext4 -q -F -L RESCUE "$rescue"
mount -o loop "$rescue" "$m"; mounts+=("$m")
tar --xattrs --xattrs-include='*' --acls --numeric-owner -C "$m" -xpf "$tar_a"
echo "UUID=$(uuid "$rescue") / ext4 errors=remount-ro 0 1" > "$m/etc/fstab"
prepare_root "$m" rescue
cp "$(ls "$m"/boot/vmlinuz-* | sort -V | tail -1)" "$work/rescue-vmlinuz"
cp "$(ls "$m"/boot/initrd.img-* | sort -V | tail -1)" "$work/rescue-initrd.img"
uuid "$rescue" > "$work/rescue.uuid"
umount "$m"; mounts=("${mounts[@]:0:${#mounts[@]}-1}")

# The provisioning boot runs A's own kernel with this script as init: it
# installs GRUB for both systems into the ESP and their NVRAM entries.
mount "$a_root" "$m"; mounts+=("$m")
cp "$here/guest/provision.sh" "$m/provision.sh"; chmod +x "$m/provision.sh"
case $variant in
  luks)
    mv "$work/b-root.tar" "$m/b-root.tar"
    printf 'A_ROOT=%s\nB_LUKS=%s\nB_BOOT=%s\nESP=%s\nPASSPHRASE=%s\n' "$(uuid "$a_root")" "$(blkid -p -s PART_ENTRY_UUID -o value "$b")" "$(uuid "$b_boot")" "$(uuid "$esp")" "$(cat "$LAB_CACHE/b.passphrase")" > "$m/provision.env" ;;
  layout) printf 'A_ROOT=%s\nB=%s\nB_BOOT=%s\nESP=%s\n' "$(uuid "$a_root")" "$(uuid "$b")" "$(uuid "$b_boot")" "$(uuid "$esp")" > "$m/provision.env" ;;
  *) printf 'A_ROOT=%s\nB=%s\nESP=%s\n' "$(uuid "$a_root")" "$(uuid "$b")" "$(uuid "$esp")" > "$m/provision.env" ;;
esac
kernel=$(ls "$m"/boot/vmlinuz-* | sort -V | tail -1); initrd=$(ls "$m"/boot/initrd.img-* | sort -V | tail -1)
cp "$kernel" "$work/vmlinuz"; cp "$initrd" "$work/initrd.img"
a_uuid=$(uuid "$a_root")
umount "$m"; mounts=("${mounts[@]:0:${#mounts[@]}-1}")
partx_d "$dev"; losetup -d "$dev"; loops=()

say "provisioning boot (GRUB for A and B, NVRAM entries)"
cp "$OVMF_VARS" "$work/vars.fd"
run_qemu "$work/provision.log" 1500 \
  -drive if=pflash,format=raw,readonly=on,file="$OVMF_CODE" -drive if=pflash,format=raw,file="$work/vars.fd" \
  -drive file="$disk",format=raw,if=virtio \
  -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
  -append "root=UUID=$a_uuid rw init=/provision.sh console=ttyS0 panic=-1" -no-reboot
grep -q "^provision: OK" "$work/provision.log" || { tail -30 "$work/provision.log" >&2; die "the provisioning boot did not finish"; }
# What A's GRUB reads: its grub.cfg as the disk holds it, no journal replayed.
dev=$(losetup --find --show --read-only "$disk"); loops=("$dev"); partx -a "$dev"
mount -o ro,norecovery "$(blkid -t UUID="$a_uuid" -o device "$dev"p*)" "$m"; mounts+=("$m")
[ -s "$m/boot/grub/grub.cfg" ] || die "A's /boot/grub/grub.cfg is not on the disk without its journal: GRUB would stop at its prompt"
umount "$m"; mounts=("${mounts[@]:0:${#mounts[@]}-1}")
partx_d "$dev"; losetup -d "$dev"; loops=()
mv "$rescue" "$work/rescue-vmlinuz" "$work/rescue-initrd.img" "$work/rescue.uuid" "$LAB_CACHE/"
mv "$disk" "$LAB_CACHE/pc.raw"; mv "$work/vars.fd" "$LAB_CACHE/vars.fd"; echo "$key" > "$LAB_CACHE/pc.key"
say "built $LAB_CACHE/pc.raw ($(du -h --apparent-size "$LAB_CACHE/pc.raw" | cut -f1) apparent, $(du -h "$LAB_CACHE/pc.raw" | cut -f1) used)"
