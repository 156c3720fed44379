#!/usr/bin/env bash
# Builds crossback_VERSION_ARCH.deb in the build's target directory
# ($CARGO_TARGET_DIR, else target/) with dpkg-deb: the binary, its man
# page and shell completions (generated from the CLI definitions), and a
# commented example configuration. Usage: scripts/build-deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
bin=${CARGO_TARGET_DIR:-target}/release/crossback
version=$("$bin" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT
install -D -s -m 0755 "$bin" "$stage/usr/bin/crossback"
mkdir -p "$stage/usr/share/man/man1"
"$bin" manpage | gzip -9n > "$stage/usr/share/man/man1/crossback.1.gz"
install -d "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" "$stage/usr/share/fish/vendor_completions.d"
"$bin" completions bash > "$stage/usr/share/bash-completion/completions/crossback"
"$bin" completions zsh > "$stage/usr/share/zsh/vendor-completions/_crossback"
"$bin" completions fish > "$stage/usr/share/fish/vendor_completions.d/crossback.fish"
install -D -m 0644 packaging/config.example.toml "$stage/usr/share/doc/crossback/config.example.toml"
install -D -m 0644 README.md "$stage/usr/share/doc/crossback/README.md"
for d in docs/*.md; do install -D -m 0644 "$d" "$stage/usr/share/doc/crossback/$d"; done
mkdir -p "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: crossback
Version: $version
Architecture: $arch
Maintainer: crossback developers <crossback@localhost>
Depends: libc6, util-linux, e2fsprogs, zstd
Recommends: xfsprogs, btrfs-progs, dosfstools, fusefat, tar, cryptsetup-bin, lvm2
Section: admin
Priority: optional
Description: offline, full, verifiable backups of the Linux systems on one machine
 crossback backs up each Linux system of a dual-boot machine while it is not
 running, from the other system or a live USB, onto an external disk whose
 two filesystems take turns, so a complete set always survives. It restores
 single files, whole systems, or a system onto fresh partitions.
CONTROL
out=${CARGO_TARGET_DIR:-target}/crossback_${version}_${arch}.deb
# Built beside it and renamed: two builds at once (the lab's scenarios run
# side by side in CI) never leave a half-written package where the other
# one reads it.
dpkg-deb --root-owner-group --build "$stage" "$out.$$" >/dev/null
mv "$out.$$" "$out"
echo "$out"
