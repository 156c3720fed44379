#!/usr/bin/env bash
# crossback's whole job on a virtual dual-boot machine made of image files
# in a temporary directory — never a real disk. Two systems (alpha: a real
# Debian root built by scripts/debian-root.sh, cached; beta: a small
# generated root), each with a root and a /home filesystem named by UUID in
# its fstab, and a backup disk with two slots. It runs: init, media prepare,
# backup, a change, backup (the rotation), status, a bare-metal restore of
# alpha onto fresh images, a fidelity check with crossback's own comparator
# (crossback-treediff, written apart from the archive code), and the restored
# Debian in a chroot (capabilities, dpkg --verify). It uses nothing outside
# the repository. Everything is cleaned up at the end, also on Ctrl-C; a
# failure says which step failed.
# Usage (as root): scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it makes loop devices): sudo $0" >&2; exit 1; }
scripts/install-deps.sh
echo "building crossback (release)…"
cargo build --release --locked -q -p crossback -p crossback-testkit --bins
target=$(realpath "${CARGO_TARGET_DIR:-target}")
bin=$target/release/crossback
treediff=$target/release/crossback-treediff
current_step="setting up"
trap 'echo "demo: FAILED at: $current_step (line $LINENO: $BASH_COMMAND)" >&2' ERR
work=$(mktemp -d "${TMPDIR:-/var/tmp}/crossback-demo.XXXXXX")
cfg=$work/config.toml
# What crossback keeps on the machine it runs on (/var/lib/crossback: the
# media as last seen) stays with the demo.
export CROSSBACK_SYSTEM_ROOT=$work/system-root
loops=()
mnts=()
cleanup() {
  set +e
  for ((i=${#mnts[@]}-1; i>=0; i--)); do umount "${mnts[i]}" 2>/dev/null || umount -l "${mnts[i]}"; done
  for l in "${loops[@]}"; do blockdev --setrw "$l" 2>/dev/null; losetup -d "$l" 2>/dev/null; done
  rm -rf --one-file-system "$work"
  echo "demo: cleaned up $work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
  step() { current_step=$*; printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
  step() { current_step=$*; printf '\n== %s\n' "$*"; }
fi
t0=$(date +%s.%N)
took() { printf '   (%.1fs)\n' "$(echo "$(date +%s.%N) - $t0" | bc)"; t0=$(date +%s.%N); }
disk() { # NAME SIZE TYPE → sets DEV to the new loop device (no subshell: cleanup must see it)
  truncate -s "$2" "$work/$1.img"
  case $3 in ext4) mkfs.ext4 -q -F "$work/$1.img" ;; esac
  DEV=$(losetup --find --show "$work/$1.img"); loops+=("$DEV")
}
uuid() { blkid -p -s UUID -o value "$1"; }
with_mounted() { # DEV CMD… : runs CMD with $M mounted
  local dev=$1; shift; export M=$work/mnt; mkdir -p "$M"; mount "$dev" "$M"; mnts+=("$M")
  "$@"; umount "$M"; mnts=("${mnts[@]:0:${#mnts[@]}-1}")
}
mini_root() { # ROOT ID PRETTY
  mkdir -p "$1"/{etc,bin,sbin,usr/lib,home,proc,sys,dev,run,tmp,root}
  printf 'ID=%s\nPRETTY_NAME="%s"\n' "$2" "$3" > "$1/usr/lib/os-release"
  ln -sf ../usr/lib/os-release "$1/etc/os-release"
  cp /bin/busybox "$1/bin/busybox"; ln -sf busybox "$1/bin/sh"; ln -sf ../bin/busybox "$1/sbin/init"
  mkdir -p "$1/etc/demo"; seq 1 20000 > "$1/etc/demo/numbers"
}

step "a virtual machine: alpha and beta (root + /home each) and a backup disk (slots A, B)"
disk alpha-root 2G ext4; a_root=$DEV; disk alpha-home 256M ext4; a_home=$DEV
disk beta-root 256M ext4; b_root=$DEV; disk beta-home 256M ext4; b_home=$DEV
disk slot-a 2G ext4; slot_a=$DEV; disk slot-b 2G ext4; slot_b=$DEV
fill_alpha() {
  scripts/debian-root.sh "$M"
  echo "   alpha: a Debian root (debootstrap, cached)"
  printf 'UUID=%s / ext4 errors=remount-ro 0 1\nUUID=%s /home ext4 defaults 0 2\n' "$(uuid "$a_root")" "$(uuid "$a_home")" > "$M/etc/fstab"
  mkdir -p "$M/home"
}
with_mounted "$a_root" fill_alpha
with_mounted "$a_home" sh -c 'mkdir -p "$M/ann" && echo "my thesis, chapter 1" > "$M/ann/thesis.txt" && head -c 20000000 /dev/urandom > "$M/ann/photo.raw"'
fill_beta() { mini_root "$M" beta "Beta OS 2"; printf 'UUID=%s / ext4 defaults 0 1\nUUID=%s /home ext4 defaults 0 2\n' "$(uuid "$b_root")" "$(uuid "$b_home")" > "$M/etc/fstab"; }
with_mounted "$b_root" fill_beta
with_mounted "$b_home" sh -c 'mkdir -p "$M/bob" && echo "bob was here" > "$M/bob/notes.txt"'
took

devs=$a_root,$a_home,$b_root,$b_home,$slot_a,$slot_b
step "crossback init   (finds the systems by UUID; writes $cfg)"
"$bin" --config "$cfg" init --yes --devices "$devs"; took
step "crossback media prepare $slot_a $slot_b"
"$bin" --config "$cfg" media prepare "$slot_a" "$slot_b"; took
step "crossback backup   (both systems are offline, as from a live USB)"
"$bin" --config "$cfg" backup; took
step "a change on alpha, then crossback backup again (the rotation: slot B)"
with_mounted "$a_home" sh -c 'echo "chapter 2" >> "$M/ann/thesis.txt"'
"$bin" --config "$cfg" backup; took
step "crossback status"
"$bin" --config "$cfg" status; took
# alpha's name comes from its os-release: "debian" for the Debian root.
alpha=$(grep -m1 -B0 '^name = ' "$cfg" | head -1 | cut -d'"' -f2)
[ "$alpha" = beta ] && alpha=$(grep '^name = ' "$cfg" | sed -n 2p | cut -d'"' -f2)
step "crossback ls $alpha /home/ann"
"$bin" --config "$cfg" ls "$alpha" /home/ann; took

step "alpha's disk dies: a bare-metal restore of $alpha onto two new images, with new UUIDs"
disk new-root 2G none; n_root=$DEV; disk new-home 256M none; n_home=$DEV
"$bin" --config "$cfg" restore "$alpha" --bare-metal --yes --new-uuids --device "/=$n_root" --device "/home=$n_home"; took

step "fidelity: the restored alpha against the original, file by file"
mkdir -p "$work/orig" "$work/new"
mount -o ro "$a_root" "$work/orig"; mnts+=("$work/orig"); mount -o ro "$a_home" "$work/orig/home"; mnts+=("$work/orig/home")
mount -o ro "$n_root" "$work/new"; mnts+=("$work/new"); mount -o ro "$n_home" "$work/new/home"; mnts+=("$work/new/home")
# Only etc/fstab may differ: it names the new UUIDs on purpose.
"$treediff" "$work/orig" "$work/new" --except etc/fstab | tail -8
diff -q "$work/orig/etc/fstab" "$work/new/etc/fstab" >/dev/null && { echo "demo: FAILED: etc/fstab was not rewritten for the new UUIDs" >&2; exit 1; }
differing=etc/fstab
if [ -f ../shared/bench/treediff.py ]; then
  # A second, independent oracle where it exists (not needed by the demo).
  python3 ../shared/bench/treediff.py "$work/orig" "$work/new" --ignore-atime --ignore-sockets | tail -3 || true
fi
grep -c UUID "$work/new/etc/fstab" >/dev/null && echo "   restored fstab:" && sed 's/^/     /' "$work/new/etc/fstab"
for m in "$work/new/home" "$work/new" "$work/orig/home" "$work/orig"; do umount "$m"; done
mnts=()
took
if true; then
  step "the restored Debian works: crossback chroot $alpha -- getcap /usr/bin/ping; dpkg --verify"
  caps=$("$bin" --config "$cfg" chroot "$alpha" -- /usr/sbin/getcap /usr/bin/ping 2>&1 || true)
  echo "   $caps"
  verify=$("$bin" --config "$cfg" chroot "$alpha" -- dpkg --verify 2>&1 || echo "dpkg --verify failed")
  echo "   dpkg --verify: ${verify:-nothing changed}"
  case $caps in *cap_net_raw*) ;; *) echo "demo: FAILED: ping lost its capability" >&2; exit 1 ;; esac
  [ -z "$verify" ] || { echo "demo: FAILED: dpkg --verify reports changes" >&2; exit 1; }
  took
fi

step "result"
gens=$("$bin" --config "$cfg" status --json | python3 -c 'import json,sys; v=json.load(sys.stdin); print(" ".join("%s:%s:%s" % (s["letter"], (s["generation"] or {}).get("seq"), (s["generation"] or {}).get("state")) for s in v["slots"]))')
echo "demo: slots: $gens"
echo "demo: restored system differs from its source in: ${differing:-nothing}"
if [ "$gens" = "A:1:sealed B:2:sealed" ] && [ "$differing" = "etc/fstab" ]; then
  echo "demo: OK: two sealed generations in different slots; the restored system is its source (etc/fstab names the new UUIDs)"
else
  echo "demo: FAILED: expected two sealed generations (A:1, B:2) and only etc/fstab changed" >&2
  exit 1
fi
