# Shared by the lab's scripts: messages, packages, the mirror, QEMU.
LAB_CACHE=${LAB_CACHE:-/var/cache/crossback/lab}
LAB_DISK_MIB=${LAB_DISK_MIB:-6144}
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
here_lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { echo "lab: $*" >&2; }

# partx -d, tried again while something (a probe of every block device:
# udev, blkid, the tests CI runs beside the lab) has a partition open for a
# moment: partx fails with "error deleting partition" then, and a
# partition left behind is found by the next user of that loop device.
partx_d() {
  local i
  for i in 1 2 3 4 5 6 7 8 9; do partx -d "$1" 2>/dev/null && return 0; sleep 1; done
  partx -d "$1"
}
die() { echo "lab: FAILED: $*"; exit 1; }

need_packages() {
  local missing=() p
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
  fi
}

mirror() { "$here_lib/../scripts/apt-mirror.sh"; }

# Makes a debootstrapped root bootable and observable: hostname, a root
# password, the serial console, GRUB's settings, a fresh machine-id.
prepare_root() { # ROOT HOSTNAME
  local r=$1
  echo "$2" > "$r/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$2" > "$r/etc/hosts"
  chroot "$r" sh -c 'echo root:crossback | chpasswd'
  : > "$r/etc/machine-id"
  chroot "$r" systemd-machine-id-setup >/dev/null 2>&1 || true
  mkdir -p "$r/etc/default" "$r/boot/efi"
  cat > "$r/etc/default/grub" <<'G'
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=`( . /etc/os-release && echo ${NAME} ${VERSION_ID} )`
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0,115200 systemd.show_status=1"
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --speed=115200"
GRUB_DISABLE_OS_PROBER=true
G
  install -m 0755 "$here_lib/guest/lab-job" "$here_lib/guest/lab-data-state" "$r/usr/local/sbin/"
  install -m 0644 "$here_lib/guest/lab-job.service" "$r/etc/systemd/system/lab-job.service"
  mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
  ln -sf /etc/systemd/system/lab-job.service "$r/etc/systemd/system/multi-user.target.wants/lab-job.service"
}

# Files the restored system must bring back as they were (issue 17's
# acceptance): an xattr, a file capability, a hard-link set; and their
# expected state in /lab-data/expected, with the machine-id.
lab_data() { # ROOT NAME
  local d=$1/lab-data
  mkdir -p "$d"
  echo "written at build time on $2" > "$d/xattr.txt"
  setfattr -n user.crossback -v "lab $2" "$d/xattr.txt"
  cp "$1/usr/bin/ping" "$d/ping-copy" && setcap cap_net_raw+ep "$d/ping-copy"
  echo "one of three names" > "$d/link1"; ln "$d/link1" "$d/link2"; ln "$d/link1" "$d/link3"
  "$here_lib/guest/lab-data-state" "$1" > "$d/expected"
}

# Runs QEMU (TCG: KVM guests hang on these machines) with the serial
# console in LOG until it powers off or TIMEOUT seconds pass. One virtual
# CPU: with two, multi-threaded TCG once crashed a guest kernel at boot
# (an int3 Oops while the kernel patched its own code, seen in CI), and CI
# runs two guests side by side on two cores anyway.
# TCG now and then leaves the emulator running after the guest powered off
# (seen in CI: "reboot: Power down", then nothing until the timeout): the
# kernel's last line stops it, 30 s later.
run_qemu() { # LOG TIMEOUT QEMU-ARGS…
  local log=$1 t=$2 q; shift 2
  : > "$log"   # not the last boot's power-off, read before QEMU truncates it
  timeout "$t" qemu-system-x86_64 -accel tcg -cpu max -m 2048 -smp 1 -machine q35 \
    -display none -monitor none -serial "file:$log" "$@" &
  q=$!
  while kill -0 "$q" 2>/dev/null; do
    if grep -aq "reboot: Power down" "$log" 2>/dev/null; then
      for _ in $(seq 30); do kill -0 "$q" 2>/dev/null || break; sleep 1; done
      kill "$q" 2>/dev/null || true
      break
    fi
    sleep 2
  done
  wait "$q" || true
}
