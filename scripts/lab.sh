#!/usr/bin/env bash
# The lab: a real (virtual) PC under QEMU + OVMF, built once and cached
# (lab/build-pc.sh). Usage (as root): scripts/lab.sh [SCENARIO]
#
# Scenarios:
#   dualboot  (the default) the user's procedure, then a dead disk: crossback
#          installed from its .deb in A; init, media prepare, backup (B);
#          reboot into B: init (from the media), backup (A, sealed), status,
#          verify, a second round into the other slot; then the system disk
#          is replaced by a blank one of 80 % the size, a rescue system
#          (neither A nor B) restores both with `restore --bare-metal --disk`
#          on fresh firmware variables; the restored disk boots into A and
#          into B (from the entries crossback made) and, with no entries at
#          all, into A through the fallback loader; in each: no failed
#          units, the fidelity data, `dpkg --verify` and the machine-id as
#          before the backup.
#   self   A backs itself up: `backup --at-reboot`; the next boot (systemd's
#          offline-update mode) backs A up read-only and reboots; A comes
#          back to multi-user, the generation is sealed, A's backup restores
#          with 0 differences; armed again without the backup disk, the
#          backup boot fails, A boots normally and `status` says why; armed
#          with a process holding a file on / open for writing in that boot,
#          it is refused and named, nothing is written, A boots normally.
#   plug   `crossback schedule` in A; A boots without the backup disk, which
#          is then hot-plugged (QEMU monitor): B is backed up by itself, and
#          the start and end are in the journal.
#   luks   the encrypted PC (LAB_PC=luks): B is Debian 13 on ext4
#          in LVM (vgb: root, swap) on LUKS2, unlocked at boot by a key file
#          in its initramfs. From A: init opens the container read-only to
#          find B; refused by kind, nothing written: a wrong passphrase, the
#          container open read-write elsewhere, a volume in use; killed
#          mid-backup, its guard closes what it opened; B backed up onto an
#          encrypted media, verified, mounted, chrooted. A rescue system
#          restores B with `restore --disk` onto a blank disk of 80 % the
#          size (its header restored, volumes shrunk), which boots B: the
#          same passphrase opens it, its state (dpkg --verify, fidelity
#          data, machine-id) as before; then onto a full-size disk with
#          --new-uuids --new-luks-key (the volume group as recorded, the
#          container and filesystems new UUIDs, crypttab and fstab
#          rewritten, GRUB and the initramfs made again in a chroot, B's key
#          file added), which boots B too: the new passphrase opens it, the
#          old one does not.
#   luks-boot  the encrypted PC: as boot, B being unlocked by its initramfs.
#   recovery  the documented path on a third PC (LAB_PC=layout): A is Debian 12
#          with / on xfs, /home on ext4 and a swap partition, B Debian 13 on
#          ext4 with /boot apart. The README's quick start typed as it is
#          (init, media prepare, backup, status) in A, then what status says
#          (boot into B, crossback backup there); a second round after files
#          changed in each. The disk dies: a rescue system mounts the slot
#          as a desktop would (read-write), types the commands of the slot's
#          README.txt (its carried crossback: init, restore --bare-metal
#          --disk onto a blank disk of 80 % the size), verify
#          --against-source finds no difference; without the backup disk,
#          the restored disk boots into A and B, each as it was backed up
#          (filesystems, swap, the changed files, dpkg --verify, machine-id).
#   rescue the backup disk boots its own rescue system: A gets
#          the signed boot chain (shim-signed, grub-efi-amd64-signed) and
#          busybox as a user installs them, makes the backup disk the media
#          with `media prepare --disk` (refused unasked while it holds
#          filesystems; encrypted; the rescue made on it), `media rescue`
#          refuses a slot; A and B back each other up. Then a blank disk instead of the system disk,
#          no firmware entries, Secure Boot enforced with Microsoft's keys
#          (OVMF .ms, SMM): the backup disk boots into the guided restore
#          (`crossback recover`), answered at the serial console as a
#          person types (lab/console.py: the passphrase, a shell and back,
#          all systems, the blank disk, yes); without the backup disk both
#          systems boot and are as they were; the rescue also boots on
#          firmware without Secure Boot, and not with its kernel unsigned.
#   boot   the dual-boot PC: A boots to multi-user from the firmware's first
#          entry, sets BootNext to B and reboots; B boots to multi-user.
# The last line is `lab: OK: …` or `lab: FAILED: …` with the reason.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
scenario=${1:-dualboot}
# The encrypted PC is another PC, cached apart.
case $scenario in
  luks*) export LAB_PC=luks LAB_CACHE=${LAB_CACHE_LUKS:-/var/cache/crossback/lab-luks} ;;
  recovery) export LAB_PC=layout LAB_CACHE=${LAB_CACHE_LAYOUT:-/var/cache/crossback/lab-layout} ;;
esac
. "$here/lab/lib.sh"
[ "$(id -u)" -eq 0 ] || die "run as root (loop devices, debootstrap)"
t0=$(date +%s)
# One build of a cached PC at a time: CI's two lanes may both want it.
mkdir -p "$LAB_CACHE"
flock "$LAB_CACHE/.build.lock" "$here/lab/build-pc.sh"
say "virtual PC ready in $(( $(date +%s) - t0 )) s"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/crossback-lab.XXXXXX")
# The guests' and consoles' logs are kept (LAB_LOGS) when the disks go.
logs=${LAB_LOGS:-/var/tmp/crossback-lab-logs}
keep_logs() { mkdir -p "$logs"; cp "$work"/*.log "$work"/*.console "$logs/" 2>/dev/null || true; rm -rf --one-file-system "$work"; }
trap keep_logs EXIT
cp --sparse=always "$LAB_CACHE/pc.raw" "$work/pc.raw"
cp --sparse=always "$LAB_CACHE/rescue.raw" "$work/rescue.raw"
cp "$LAB_CACHE/vars.fd" "$work/vars.fd"

# The job disk: run.sh for the guests, results read back with debugfs.
job_disk() { # SCRIPT [FILE…]: a new job disk with run.sh and the files
  local f
  rm -f "$work/job.raw"
  truncate -s 64M "$work/job.raw"
  mkfs.ext4 -q -F -L LABJOB "$work/job.raw"
  printf '%s\n' "$1" > "$work/run.sh"
  debugfs -w -R "write $work/run.sh run.sh" "$work/job.raw" >/dev/null 2>&1
  shift
  for f in "$@"; do debugfs -w -R "write $f $(basename "$f")" "$work/job.raw" >/dev/null 2>&1; done
}

# Did the guests leave this file on the job disk?
job_done() { debugfs -R "stat $1" "$work/job.raw" 2>/dev/null | grep -q Inode; }

# The backup disk: two ext4 partitions (their UUIDs in slot_a, slot_b); a
# removable SCSI disk whose writes QEMU throttles to 80 MiB/s (a USB disk's
# speed): backup_disk holds its QEMU arguments.
# With backup_layout=rescue: a 160 MiB EFI system partition first, named
# crossback-rescue, left empty for `media rescue`.
make_backup_disk() {
  local bdev a=p1 b=p2
  truncate -s 2560M "$work/backup.raw"
  if [ "${backup_layout:-}" = rescue ]; then
    printf 'label: gpt\nsize=160MiB, type=U, name="crossback-rescue"\nsize=1190MiB, type=L, name="slot-a"\ntype=L, name="slot-b"\n' | sfdisk -q "$work/backup.raw"
    a=p2 b=p3
  else
    printf 'label: gpt\nsize=1270MiB, type=L, name="slot-a"\ntype=L, name="slot-b"\n' | sfdisk -q "$work/backup.raw"
  fi
  bdev=$(losetup --find --show "$work/backup.raw")
  partx -a "$bdev"
  mkfs.ext4 -q -F -L slot-a "${bdev}$a"; mkfs.ext4 -q -F -L slot-b "${bdev}$b"
  slot_a=$(blkid -p -s UUID -o value "${bdev}$a"); slot_b=$(blkid -p -s UUID -o value "${bdev}$b")
  partx_d "$bdev"; losetup -d "$bdev"
}
# What a scenario that installs crossback needs: the tools, crossback's
# Debian package ($work/crossback.deb) and a backup disk.
run_setup() { # [MORE PACKAGES…]
  need_packages fdisk e2fsprogs "$@"
  say "building crossback's Debian package"
  deb=$("$here/scripts/build-deb.sh") || die "scripts/build-deb.sh failed"
  cp "$deb" "$work/crossback.deb"
  make_backup_disk
}
# A blank disk of 80 % the system disk's size ($work/blank.raw, blank_mib).
blank_disk() {
  blank_mib=$(( LAB_DISK_MIB * 8 / 10 ))
  truncate -s "${blank_mib}M" "$work/blank.raw"
}
backup_drive="file=$work/backup.raw,if=none,id=bk,format=raw,throttling.bps-write=83886080"
backup_disk=(-device virtio-scsi-pci,id=scsi0 -drive "$backup_drive" -device scsi-hd,drive=bk,bus=scsi0.0,removable=on)

# Writes the phase file on the job disk.
set_phase() { echo "$1" > "$work/phase"; debugfs -w -R "rm phase" "$work/job.raw" >/dev/null 2>&1; debugfs -w -R "write $work/phase phase" "$work/job.raw" >/dev/null 2>&1; }

pc_once() { # LOG VARS TIMEOUT DRIVES…: one boot, until the guest powers off or reboots
  local log=$1 vars=$2 t=$3; shift 3
  : > "$work/job.log"
  run_qemu "$work/$log.console" "$t" \
    -drive if=pflash,format=raw,readonly=on,file="$OVMF_CODE" -drive if=pflash,format=raw,file="$vars" \
    -serial "file:$work/job.log" -no-reboot "$@"
  cat "$work/job.log" >> "$work/all-jobs.log"
  # What ran in the guest, without the firmware's screen codes.
  grep -av $'\e' "$work/job.log" | grep -v '^\s*$' >&2 || true
}

boot_pc() { # TIMEOUT [EXTRA QEMU ARGS…]: boots until the guest powers off
  local t=$1; shift
  run_qemu "$work/console.log" "$t" \
    -drive if=pflash,format=raw,readonly=on,file="$OVMF_CODE" -drive if=pflash,format=raw,file="$work/vars.fd" \
    -drive file="$work/pc.raw",format=raw,if=virtio \
    -drive file="$work/job.raw",format=raw,if=virtio \
    -serial "file:$work/job.log" -action reboot=reset "$@"
}

# Boots until the guests stop asking for another boot (a line
# "PREFIX: SYSTEM: rebooting into …"); a boot that never reached multi-user
# (the emulator hung in the firmware) is tried once more.
pcs() { # PREFIX LOG VARS TIMEOUT DRIVES…
  local prefix=$1 boots=0 retried=0; shift
  while :; do
    boots=$((boots + 1))
    pc_once "$@"
    if ! grep -aq "reached multi-user" "$work/job.log"; then
      ((retried)) && return 0
      retried=1; say "the guest did not reach multi-user (an emulator hang?): booting once more"; continue
    fi
    grep -aq "^$prefix: .*: rebooting into" "$work/job.log" && ((boots < 6)) || return 0
  done
}
# The rescue system (its own kernel, neither A nor B) with DISK as /dev/vdb
# and the backup disk: its QEMU arguments.
rescue_drives() { # DISK
  rescue_args=(-kernel "$LAB_CACHE/rescue-vmlinuz" -initrd "$LAB_CACHE/rescue-initrd.img"
    -append "root=UUID=$(cat "$LAB_CACHE/rescue.uuid") rw console=ttyS0 panic=-1"
    -drive file="$work/rescue.raw",format=raw,if=virtio -drive file="$1",format=raw,if=virtio
    -drive file="$work/job.raw",format=raw,if=virtio "${backup_disk[@]}")
}
# virt-fw-vars (virt-firmware, from PyPI, cached): reads and edits OVMF's
# variables on the host.
pylib=/var/cache/crossback/pylib
need_virt_firmware() {
  PYTHONPATH=$pylib python3 -c 'import virt.firmware.vars' 2>/dev/null && return 0
  local d; d=$(mktemp -d)
  python3 -m pip download -q --no-deps --dest "$d" virt-firmware==26.10 >/dev/null 2>&1 || die "pip download virt-firmware failed"
  mkdir -p "$pylib" && python3 -m zipfile -e "$d"/virt_firmware-*.whl "$pylib" || die "unpacking virt-firmware"
  rm -rf "$d"
}
vfw() { PYTHONPATH=$pylib python3 -c 'import sys; from virt.firmware.vars import main; sys.exit(main())' "$@"; }
# A new motherboard: the restored disk (blank.raw) with fresh firmware
# variables, no entries, no Secure Boot; the fallback loader the restore
# made starts A, which checks itself (the job's fallback_phase).
fallback_boot() { # JOB
  set_phase fallback
  cp "$OVMF_VARS" "$work/fresh-vars.fd"
  local t; t=$(date +%s)
  pcs "$1" fallback "$work/fresh-vars.fd" 900 -drive file="$work/blank.raw",format=raw,if=virtio -drive file="$work/job.raw",format=raw,if=virtio
  job_done done-fallback || phase_failed fallback "the restored disk did not boot through the fallback loader with fresh firmware variables"
  times+=("the restored disk, fresh firmware variables: the fallback loader into A, checked: $(( $(date +%s) - t )) s")
}
phase_failed() { # LOG WHY: what the guests said and the console's end
  cat "$work/job.log" >&2; tail -30 "$work/$1.console" >&2 2>/dev/null; die "$2"
}

case $scenario in
  boot|luks-boot)
    job_disk '
      set -e
      . /etc/os-release
      echo "lab-job: in $(hostname): $PRETTY_NAME, kernel $(uname -r), $(systemctl is-system-running || true)"
      if [ "$(hostname)" = system-a ]; then
        b=$(efibootmgr | sed -n "s/^Boot\([0-9A-F]*\)\* debian-b\$/\1/p")
        efibootmgr --bootnext "$b" >/dev/null
        echo "lab-job: BootNext=$b (debian-b); rebooting"
        sync; systemctl reboot
      else
        echo "lab-job: B: / from $(findmnt -n -o SOURCE /), /boot from $(findmnt -n -o SOURCE /boot)"
        if command -v cryptsetup >/dev/null; then
          echo "lab-job: B: $(cryptsetup status b_crypt | head -1); $(lvs --noheadings -o vg_name,lv_name | tr -s " " | tr "\n" ";"); swap $(swapon --noheadings --show=NAME | tr "\n" " ")"
          # What crossback reads (crates/host/src/layers.rs), as the real tools print it.
          set +e
          part=$(cryptsetup status b_crypt | sed -n "s/^ *device: *//p")
          echo "lab-dump: luksUUID $(cryptsetup luksUUID "$part")"
          echo "lab-dump: luksDump $(cryptsetup luksDump --dump-json-metadata "$part" | tr -d "\n")"
          for r in "pvs pv_name,pv_uuid,vg_name,pv_size" "vgs vg_name,vg_uuid,vg_size,vg_extent_size" "lvs lv_name,vg_name,lv_uuid,lv_size,lv_attr"; do
            set -- $r
            echo "lab-dump: $1 $($1 --reportformat json --units b --nosuffix -o "$2" 2>/dev/null | tr -d "\n")"
          done
          for d in /sys/class/block/dm-*; do
            echo "lab-dump: sysfs $(basename "$d") name=$(cat "$d/dm/name") uuid=$(cat "$d/dm/uuid") slaves=$(ls "$d/slaves" | tr "\n" " ")"
          done
          set -e
        fi
        sync; systemctl poweroff
      fi'
    t1=$(date +%s)
    boot_pc 900
    cat "$work/job.log" >&2 || true
    grep -q "lab-job: in system-a: Debian GNU/Linux 12" "$work/job.log" || { tail -40 "$work/console.log" >&2; die "A did not reach multi-user"; }
    grep -q "lab-job: in system-b: Debian GNU/Linux 13" "$work/job.log" || { tail -40 "$work/console.log" >&2; die "B did not boot after A set BootNext"; }
    if [ "$scenario" = luks-boot ]; then
      grep -q "lab-job: B: / from /dev/mapper/vgb-root" "$work/job.log" || die "B's root is not the LV vgb/root"
      grep -q "lab-job: B: /dev/mapper/b_crypt is active" "$work/job.log" || die "B's LUKS container is not open"
      echo "lab: OK: luks-boot: A (Debian 12, ext4) and B (Debian 13 in LVM on LUKS2, unlocked by its initramfs) boot to multi-user ($(( $(date +%s) - t1 )) s for both boots)"
    else
      echo "lab: OK: A (Debian 12, ext4) and B (Debian 13, btrfs) boot to multi-user under OVMF from their own NVRAM entries ($(( $(date +%s) - t1 )) s for both boots)"
    fi
    ;;
  dualboot)
    run_setup
    blank_disk
    printf 'SLOT_A=%s\nSLOT_B=%s\nBLANK=/dev/vdb\nPASSPHRASE=%s\n' "$slot_a" "$slot_b" "lab-passphrase-$RANDOM$RANDOM" > "$work/env"
    echo backup > "$work/phase"
    job_disk "$(cat "$here/lab/jobs/dualboot.sh")" "$here/lab/jobs/lib.sh" "$work/crossback.deb" "$work/env" "$work/phase"
    pc() { pcs dualboot "$@"; }
    rescue() { # LOG VARS TIMEOUT DISK
      rescue_drives "$4"; pc "$1" "$2" "$3" "${rescue_args[@]}"
    }
    times=()
    t=$(date +%s)
    pc backup "$work/vars.fd" 1200 -drive file="$work/pc.raw",format=raw,if=virtio -drive file="$work/job.raw",format=raw,if=virtio "${backup_disk[@]}"
    job_done done-a2 || phase_failed backup "the backups (A, B, A) did not finish"
    times+=("user's procedure (3 boots, 2 generations): $(( $(date +%s) - t )) s")
    written=$(du -m "$work/backup.raw" | cut -f1)

    set_phase rescue
    cp "$OVMF_VARS" "$work/rescue-vars.fd"
    t=$(date +%s)
    rescue rescue "$work/rescue-vars.fd" 1500 "$work/blank.raw"
    job_done done-rescue || phase_failed rescue "the rescue system did not restore the disk"
    times+=("rescue boot and restore --disk onto the blank ${blank_mib} MiB disk: $(( $(date +%s) - t )) s")

    set_phase restored
    t=$(date +%s)
    pc restored "$work/rescue-vars.fd" 900 -drive file="$work/blank.raw",format=raw,if=virtio -drive file="$work/job.raw",format=raw,if=virtio
    job_done done-restored-b || phase_failed restored "the restored disk did not boot into A and then B from crossback's boot entries"
    times+=("restored disk: A, then B, from crossback's entries: $(( $(date +%s) - t )) s")

    fallback_boot dualboot

    # A layout made by hand and new UUIDs: GRUB repaired in a chroot.
    set_phase newuuids
    cp "$OVMF_VARS" "$work/newuuids-vars.fd"
    truncate -s "${LAB_DISK_MIB}M" "$work/newdisk.raw"
    t=$(date +%s)
    rescue newuuids "$work/newuuids-vars.fd" 1200 "$work/newdisk.raw"
    job_done done-newuuids || phase_failed newuuids "the rescue system did not restore A with new UUIDs"
    set_phase newuuids-boot
    pc newuuids-boot "$work/newuuids-vars.fd" 900 -drive file="$work/newdisk.raw",format=raw,if=virtio -drive file="$work/job.raw",format=raw,if=virtio
    job_done done-newuuids-a || phase_failed newuuids-boot "A restored with new UUIDs (GRUB repaired by crossback) did not boot"
    times+=("A restored onto hand-made partitions with new UUIDs, GRUB repaired, booted: $(( $(date +%s) - t )) s")
    for x in "${times[@]}"; do say "time: $x"; done
    say "backup disk: $(grep -o 'wrote [0-9.]* MiB to the backup disk' "$work/all-jobs.log" | awk '{s += $2} END {printf "%.0f", s}') MiB written in the three backup boots (the guests' counters); $written MiB allocated in its image"
    echo "lab: OK: dualboot: backed up from each other, restored by a rescue system onto a blank ${blank_mib} MiB disk, booted into A and B as before ($(( $(date +%s) - t0 )) s in all)"
    ;;
  luks)
    run_setup
    blank_disk
    truncate -s "${LAB_DISK_MIB}M" "$work/full.raw"
    printf 'SLOT_A=%s\nSLOT_B=%s\nBLANK=/dev/vdb\nMEDIA_PASS=%s\nB_PASS=%s\n' "$slot_a" "$slot_b" "lab-media-$RANDOM$RANDOM" "$(cat "$LAB_CACHE/b.passphrase")" > "$work/env"
    echo backup > "$work/phase"
    job_disk "$(cat "$here/lab/jobs/luks.sh")" "$here/lab/jobs/lib.sh" "$work/crossback.deb" "$work/env" "$work/phase"
    times=()
    t=$(date +%s)
    pcs luks backup "$work/vars.fd" 1500 -drive file="$work/pc.raw",format=raw,if=virtio -drive file="$work/job.raw",format=raw,if=virtio "${backup_disk[@]}"
    job_done done-a || phase_failed backup "A did not back up B (above)"
    times+=("B's state, then A: init, the refusals, a killed backup, the backup, verify, mount, chroot: $(( $(date +%s) - t )) s")
    set_phase rescue
    cp "$OVMF_VARS" "$work/rescue-vars.fd"
    t=$(date +%s)
    rescue() { # LOG DISK
      rescue_drives "$2"; pc_once "$1" "$work/rescue-vars.fd" 1800 "${rescue_args[@]}"
    }
    rescue rescue "$work/blank.raw"
    job_done done-rescue || phase_failed rescue "the rescue system did not restore B onto the smaller disk"
    times+=("rescue: B restored onto the ${blank_mib} MiB disk (header restored, volumes shrunk): $(( $(date +%s) - t )) s")
    set_phase restored
    t=$(date +%s)
    pc_once restored "$work/rescue-vars.fd" 900 -drive file="$work/blank.raw",format=raw,if=virtio -drive file="$work/job.raw",format=raw,if=virtio
    job_done done-restored || phase_failed restored "the restored B did not boot as before (above)"
    times+=("the smaller disk boots B: $(( $(date +%s) - t )) s")
    set_phase rescue2
    t=$(date +%s)
    rescue rescue2 "$work/full.raw"
    job_done done-rescue2 || phase_failed rescue2 "the rescue system did not restore B with new UUIDs and a new key"
    set_phase newuuids
    pc_once newuuids "$work/rescue-vars.fd" 900 -drive file="$work/full.raw",format=raw,if=virtio -drive file="$work/job.raw",format=raw,if=virtio
    job_done done-newuuids || phase_failed newuuids "B restored with new UUIDs and a new key did not boot as before (above)"
    times+=("B restored onto a full-size disk with new UUIDs and a new master key, and booted: $(( $(date +%s) - t )) s")
    for x in "${times[@]}"; do say "time: $x"; done
    echo "lab: OK: luks: B (LVM on LUKS2) backed up from A with its container opened read-only, refusals by kind; restored by a rescue system onto a smaller disk, which boots with the same passphrase, and with new UUIDs and a new master key onto another, which boots too ($(( $(date +%s) - t0 )) s in all)"
    ;;
  recovery)
    run_setup
    blank_disk
    printf 'SLOT_A=%s\nSLOT_B=%s\nBLANK=/dev/vdb\n' "$slot_a" "$slot_b" > "$work/env"
    echo backup > "$work/phase"
    job_disk "$(cat "$here/lab/jobs/recovery.sh")" "$here/lab/jobs/lib.sh" "$work/crossback.deb" "$work/env" "$work/phase" "$here/README.md"
    times=()
    t=$(date +%s)
    pcs recovery backup "$work/vars.fd" 1500 -drive file="$work/pc.raw",format=raw,if=virtio -drive file="$work/job.raw",format=raw,if=virtio "${backup_disk[@]}"
    job_done done-b2 || phase_failed backup "the two rounds of backups (A, B, A, B) did not finish"
    times+=("the README's quick start, then two rounds from each system (4 boots, 2 generations): $(( $(date +%s) - t )) s")
    set_phase rescue
    cp "$OVMF_VARS" "$work/rescue-vars.fd"
    t=$(date +%s)
    rescue_drives "$work/blank.raw"
    pc_once rescue "$work/rescue-vars.fd" 1500 "${rescue_args[@]}"
    job_done done-rescue || phase_failed rescue "the rescue system did not restore the disk as the slot's README.txt says"
    times+=("rescue: the slot's README.txt typed, restore --disk onto the blank ${blank_mib} MiB disk, verify --against-source: $(( $(date +%s) - t )) s")
    set_phase restored
    t=$(date +%s)
    pcs recovery restored "$work/rescue-vars.fd" 900 -drive file="$work/blank.raw",format=raw,if=virtio -drive file="$work/job.raw",format=raw,if=virtio
    job_done done-restored-b || phase_failed restored "the restored disk did not boot into A and then B as they were backed up"
    times+=("the restored disk, without the backup disk: A, then B: $(( $(date +%s) - t )) s")
    for x in "${times[@]}"; do say "time: $x"; done
    echo "lab: OK: recovery: the READMEs' commands as written — A (/ on xfs, /home, swap) and B (ext4, /boot apart) backed up from each other twice, restored by a rescue system from the slot's own crossback onto a blank ${blank_mib} MiB disk, verified against it, booted as before ($(( $(date +%s) - t0 )) s in all)"
    ;;
  self|plug)
    # System A backs itself up at reboot (self), or by itself when
    # the backup disk is hot-plugged (plug); lab/jobs/unattended.sh is the
    # guest's side. A boots from the firmware's first entry.
    run_setup socat
    printf 'SLOT_A=%s\nSLOT_B=%s\n' "$slot_a" "$slot_b" > "$work/env"
    a_disks=(-drive file="$work/pc.raw",format=raw,if=virtio -drive file="$work/job.raw",format=raw,if=virtio)
    failed_boot() { # LOG WHY
      tail -60 "$work/$1.console" >&2 2>/dev/null; die "$2"
    }
    times=()
    if [ "$scenario" = self ]; then
      echo setup > "$work/phase"
      job_disk "$(cat "$here/lab/jobs/unattended.sh")" "$here/lab/jobs/lib.sh" "$work/crossback.deb" "$work/env" "$work/phase"
      t=$(date +%s)
      pc_once setup "$work/vars.fd" 900 "${a_disks[@]}" "${backup_disk[@]}"
      job_done done-setup || failed_boot setup "A did not back up B and arm the backup at reboot"
      grep -aq "armed: at the next boot" "$work/job.log" || failed_boot setup "backup --at-reboot did not arm"
      # The backup's boot: systemd's offline-update mode, no multi-user, no
      # lab-job; crossback's unit shows its work on the console.
      pc_once atreboot "$work/vars.fd" 1500 "${a_disks[@]}" "${backup_disk[@]}"
      grep -a "crossback" "$work/atreboot.console" | grep -av $'\e' >&2 || true
      grep -aq "crossback: backup at reboot done" "$work/atreboot.console" || failed_boot atreboot "the boot of the backup did not back A up"
      grep -aq "reached multi-user" "$work/job.log" && failed_boot atreboot "the boot of the backup reached multi-user"
      times+=("A armed; its backup boot, A backed up offline, reboot: $(( $(date +%s) - t )) s")
      set_phase check
      t=$(date +%s)
      pc_once check "$work/vars.fd" 900 "${a_disks[@]}" "${backup_disk[@]}"
      job_done done-check || failed_boot check "A after its backup at reboot: not as expected (above)"
      times+=("A back to multi-user by itself; its backup restored and compared: $(( $(date +%s) - t )) s")
      # Armed again, and the backup disk is not there.
      set_phase nodisk
      t=$(date +%s)
      pc_once nodisk-atreboot "$work/vars.fd" 900 "${a_disks[@]}"
      grep -a "crossback" "$work/nodisk-atreboot.console" | grep -av $'\e' >&2 || true
      grep -aq "the backup disk did not appear within" "$work/nodisk-atreboot.console" || failed_boot nodisk-atreboot "the backup boot without the disk did not say why it failed"
      pc_once nodisk "$work/vars.fd" 900 "${a_disks[@]}"
      job_done done-nodisk || failed_boot nodisk "A did not boot normally after the failed backup boot"
      times+=("without the backup disk: the backup boot fails, A boots normally: $(( $(date +%s) - t )) s")
      # Armed again (in the boot above) with a process that holds a file on /
      # open for writing in the backup's boot: refused, named, nothing written.
      set_phase busy
      t=$(date +%s)
      pc_once busy-atreboot "$work/vars.fd" 900 "${a_disks[@]}" "${backup_disk[@]}"
      grep -a "crossback" "$work/busy-atreboot.console" | grep -av $'\e' >&2 || true
      grep -aq "could not be made read-only" "$work/busy-atreboot.console" || failed_boot busy-atreboot "the backup boot did not refuse a writable /"
      pc_once busy "$work/vars.fd" 900 "${a_disks[@]}" "${backup_disk[@]}"
      job_done done-busy || failed_boot busy "A after the refused backup boot: not as expected (above)"
      times+=("a writer on / in the backup boot: refused and named, A boots normally: $(( $(date +%s) - t )) s")
      for x in "${times[@]}"; do say "time: $x"; done
      echo "lab: OK: self: A backed itself up offline at reboot (sealed, restored with 0 differences); without the backup disk, and with a writer on /, the backup boot refused, said why, and A booted normally ($(( $(date +%s) - t0 )) s in all)"
    else
      echo plug-setup > "$work/phase"
      job_disk "$(cat "$here/lab/jobs/unattended.sh")" "$here/lab/jobs/lib.sh" "$work/crossback.deb" "$work/env" "$work/phase"
      t=$(date +%s)
      pc_once plug-setup "$work/vars.fd" 900 "${a_disks[@]}" "${backup_disk[@]}"
      job_done done-plug-setup || failed_boot plug-setup "A did not prepare the media and schedule"
      set_phase plug
      # A without the backup disk (an empty SCSI controller); the host plugs
      # it in through QEMU's monitor once the guest says it is ready.
      mon=$work/monitor.sock
      (
        for _ in $(seq 1 900); do
          grep -aq "ready for the backup disk" "$work/job.log" 2>/dev/null && break
          sleep 1
        done
        sleep 3
        { printf 'drive_add 0 %s\ndevice_add scsi-hd,drive=bk,bus=scsi0.0,id=bkdev,removable=on\n' "$backup_drive"; sleep 2; } | socat - "UNIX-CONNECT:$mon" > "$work/monitor.log" 2>&1
        echo "plugged" >> "$work/monitor.log"
      ) &
      plugger=$!
      pc_once plug "$work/vars.fd" 1500 "${a_disks[@]}" -device virtio-scsi-pci,id=scsi0 -monitor "unix:$mon,server=on,wait=off"
      kill "$plugger" 2>/dev/null || true
      cat "$work/monitor.log" >&2 2>/dev/null || true
      job_done done-plug || failed_boot plug "the hot-plugged backup disk did not get B backed up by itself"
      times+=("A set up, then the disk hot-plugged and B backed up by itself: $(( $(date +%s) - t )) s")
      for x in "${times[@]}"; do say "time: $x"; done
      echo "lab: OK: plug: the backup disk hot-plugged into A, B backed up by itself, the start and end in the journal ($(( $(date +%s) - t0 )) s in all)"
    fi
    ;;
  rescue)
    # The backup disk boots its own rescue system under Secure Boot and
    # restores the dead PC. A gets the signed boot chain as a user installs
    # it, makes the backup disk the media with `media prepare --disk`
    # (encrypted, the rescue made on it) and backs up B; B backs up A
    # (lab/jobs/rescue.sh). Then the system disk is replaced by a blank one,
    # the firmware has no boot entries and enforces Secure Boot with
    # Microsoft's keys (OVMF .ms, SMM): the backup disk boots into the
    # guided restore, answered at the serial console as a person types
    # (lab/console.py), which restores both systems; without the backup
    # disk both boot and check they are as they were, and with fresh
    # firmware variables A boots through the fallback loader. The same
    # rescue on firmware without Secure Boot opens the media and lists its
    # generations; with its kernel's signature removed it is refused.
    need_packages mtools sbsigntool python3-cryptography python3-pefile python3-yaml python3-requests python3-pip
    need_virt_firmware
    run_setup
    blank_disk
    pass="lab-passphrase-$RANDOM$RANDOM"
    printf 'BACKUP=/dev/sda\nPASSPHRASE=%s\n' "$pass" > "$work/env"
    mkdir -p "$work/debs"
    (cd "$work/debs" && apt-get download -q shim-signed shim-signed-common shim-helpers-amd64-signed shim-unsigned mokutil \
      grub-efi-amd64-signed libefivar1 libefiboot1 libkeyutils1 busybox >/dev/null 2>&1) || die "apt-get download of the signed boot chain failed"
    for f in "$work"/debs/*.deb; do mv "$f" "$work/debs/sb-$(basename "$f")"; done
    echo setup > "$work/phase"
    job_disk "$(cat "$here/lab/jobs/rescue.sh")" "$here/lab/jobs/lib.sh" "$work/crossback.deb" "$work/env" "$work/phase" "$work"/debs/sb-*.deb
    times=()
    t=$(date +%s)
    pcs rescue setup "$work/vars.fd" 1500 -drive file="$work/pc.raw",format=raw,if=virtio -drive file="$work/job.raw",format=raw,if=virtio "${backup_disk[@]}"
    job_done done-setup || phase_failed setup "A and B did not make the media, its rescue and their backups"
    times+=("A: the signed chain installed, media prepare --disk (with the rescue), a backup; B: a backup: $(( $(date +%s) - t )) s")
    say "$(grep -a "rescue: system-a: the rescue system is on" "$work/all-jobs.log" | head -1)"
    say "$(grep -a "rescue: system-b: rescue system:" "$work/all-jobs.log" | head -1)"
    # Boots the firmware (Secure Boot enforced with Microsoft's keys; with
    # MODE plain, none) and DRIVES, its console served for lab/console.py
    # and kept in LOG.console; fresh variables in LOG-vars.fd. QEMU's pid in qpid.
    sb_qemu() { # LOG MODE TIMEOUT DRIVES…
      local log=$work/$1.console code=/usr/share/OVMF/OVMF_CODE_4M.ms.fd vars=/usr/share/OVMF/OVMF_VARS_4M.ms.fd
      [ "$2" = plain ] && code=$OVMF_CODE vars=$OVMF_VARS
      cp "$vars" "$work/$1-vars.fd"
      : > "$log"
      rm -f "$work/$1.sock"
      timeout "$3" qemu-system-x86_64 -accel tcg -cpu max -m 2048 -smp 1 -machine q35,smm=on \
        -global driver=cfi.pflash01,property=secure,value=on \
        -drive if=pflash,format=raw,readonly=on,file="$code" \
        -drive if=pflash,format=raw,file="$work/$1-vars.fd" \
        -display none -monitor none -no-reboot \
        -chardev socket,id=con,path="$work/$1.sock",server=on,wait=off,logfile="$log" -serial chardev:con \
        "${@:4}" &
      qpid=$!
    }
    console() { python3 "$here/lab/console.py" "$work/$1.sock" "$work/$1.typed" "$2" "${@:3}"; }
    # The guided restore under Secure Boot, from the first question to the restart.
    set_phase restored
    t=$(date +%s)
    sb_qemu sb secure 3000 "${backup_disk[@]}" -drive file="$work/blank.raw",format=raw,if=virtio
    console sb 2400 \
      'Secure Boot: on=>{wait}' \
      'Its passphrase: =>'"$pass" \
      'took the configuration from the backup media=>{wait}' \
      'Restore which generation\? Number \[1\] > =>!' \
      "comes back to the question=>crossback --version" \
      'crossback [0-9]+[.][0-9]+=>exit' \
      'Restore which generation\? Number \[1\] > =>' \
      'Restore which systems\?.*> =>all' \
      'Restore onto which disk\?.*> =>{line:/dev/vda }' \
      'Start the restore\? Type yes > =>yes' \
      'Remove the backup disk and reboot[.]=>{wait}' \
      'Press Enter to restart.*> =>' 2> "$work/console.times" || { cat "$work/console.times" >&2; kill "$qpid" 2>/dev/null; phase_failed sb "the guided restore under Secure Boot did not go through (console above)"; }
    wait "$qpid" 2>/dev/null || true
    cat "$work/console.times" >&2
    # The kernel's own word, beside the guide's (the serial line may double a
    # character of one line, so any of three).
    grep -aqE "secureboot: Secure boot enabled|UEFI Secure Boot is enabled|Kernel is locked down from EFI" "$work/sb.console" \
      || phase_failed sb "the kernel did not say it booted under Secure Boot"
    times+=("the guided restore under Secure Boot, power-on to restart: $(( $(date +%s) - t )) s")
    first=$(sed -n 's/^console: +\([0-9.]*\) s: step 2: .*/\1/p' "$work/console.times")
    times+=("power-on to the guided restore's first question (the passphrase): about ${first} s")
    restored_in=$(grep -ao "restored in [^.]*" "$work/sb.console" | tail -1)
    times+=("the restore itself, as the guide measured it: ${restored_in#restored in }")
    # The entries crossback made, as the firmware keeps them; then the same
    # variables with Secure Boot off (PK deleted: B's loader is not signed).
    vfw -i "$work/sb-vars.fd" --print > "$work/sb-vars.txt" 2>&1 || die "virt-fw-vars could not read the variables"
    grep -a "debian-a" "$work/sb-vars.txt" >/dev/null && grep -a "debian-b" "$work/sb-vars.txt" >/dev/null \
      || { cat "$work/sb-vars.txt" >&2; die "the restore under Secure Boot made no firmware entries for A and B"; }
    say "firmware entries after the restore: $(grep -ao 'debian-[ab]' "$work/sb-vars.txt" | sort -u | tr '\n' ' ')"
    vfw -i "$work/sb-vars.fd" --delete PK -o "$work/restored-vars.fd" > /dev/null 2>&1 || die "virt-fw-vars could not turn Secure Boot off"
    t=$(date +%s)
    pcs rescue restored "$work/restored-vars.fd" 900 -drive file="$work/blank.raw",format=raw,if=virtio -drive file="$work/job.raw",format=raw,if=virtio
    job_done done-restored-b || phase_failed restored "the restored disk did not boot into A and then B as they were backed up"
    times+=("the restored disk, the backup disk removed: A, then B, each checked: $(( $(date +%s) - t )) s")
    fallback_boot rescue
    # The same backup disk on firmware without Secure Boot: the guided
    # restore opens the media with its passphrase and lists its generations.
    sb_qemu plain plain 600 "${backup_disk[@]}"
    console plain 540 'Secure Boot: off=>{wait}' 'Its passphrase: =>'"$pass" 'Restore which generation\? Number \[1\] > =>{wait}' 2> "$work/plain.times" \
      || { kill "$qpid"; phase_failed plain "the backup disk did not boot into the guided restore without Secure Boot"; }
    kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null || true
    # The negative check: the kernel's signature removed, the firmware's chain refuses it.
    start=$(sfdisk -J "$work/backup.raw" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][0]["start"] * 512)')
    cp --sparse=always "$work/backup.raw" "$work/unsigned.raw"
    mcopy -n -i "$work/unsigned.raw@@$start" ::crossback/vmlinuz "$work/vmlinuz" || die "mcopy out of the rescue partition"
    sbattach --remove "$work/vmlinuz" >/dev/null || die "sbattach --remove"
    mcopy -o -i "$work/unsigned.raw@@$start" "$work/vmlinuz" ::crossback/vmlinuz || die "mcopy into the rescue partition"
    sb_qemu unsigned secure 300 -device virtio-scsi-pci,id=scsi0 -drive file="$work/unsigned.raw",if=none,id=bk,format=raw -device scsi-hd,drive=bk,bus=scsi0.0,removable=on
    console unsigned 240 'bad shim signature|Verification failed|invalid signature|Access Denied|Secure Boot: on=>{wait}' 2> /dev/null || true
    kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null || true
    grep -aq "crossback rescue: ready" "$work/unsigned.console" && phase_failed unsigned "an unsigned kernel booted under Secure Boot"
    grep -aiq "bad shim signature\|Verification failed\|invalid signature\|Access Denied" "$work/unsigned.console" || phase_failed unsigned "no refusal of the unsigned kernel on the console"
    for x in "${times[@]}"; do say "time: $x"; done
    echo "lab: OK: rescue: the backup disk (made by media prepare --disk) booted its rescue under enforced Secure Boot; the guided restore, typed at the console, restored A and B onto a blank disk, and both booted as before (A also through the fallback loader with fresh firmware variables); the rescue also boots and opens the media without Secure Boot, and an unsigned kernel was refused ($(( $(date +%s) - t0 )) s in all)"
    ;;
  *) die "no scenario $scenario (see scripts/lab.sh's header)" ;;
esac
