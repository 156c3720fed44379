#!/usr/bin/env bash
# Off-site copies against a real store on 127.0.0.1 (SeaweedFS: master,
# volume server, filer with its S3 gateway), in the same run:
#   - `crossback push` of one sealed generation against `rclone copy` of the
#     same files from the slot to the same store: time and peak RSS;
#   - `crossback restore --to DIR --remote` of the whole system against
#     `rclone copy` of the same objects down to a local directory, then a
#     local restore of them with the standard tools (age -d | zstd -dc |
#     tar -x), and against the download alone (the floor);
#   - `crossback restore` of one small file from the remote: bytes the
#     store's S3 gateway sent (its /proc/PID/io wchar, counted at the
#     server), against what the read must fetch at least — the index region
#     and the frames holding the file, found by bench/frames.py from the
#     archive alone with zstd and GNU tar — and against the archive's size.
# The system: a minimal root on one ext4, SIZE MiB of random (incompressible)
# data as its /home on another; a plain media (push encrypts on the way,
# rclone sends the files as they are). Needs the servers
# scripts/install-deps.sh installs ($CROSSBACK_TEST_SERVERS).
# Usage: sudo bench/remote.sh [SIZE_MIB=1024] [RUNS=3]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
size=${1:-1024}
runs=${2:-3}
servers=${CROSSBACK_TEST_SERVERS:-/var/cache/crossback/servers}
weed=$servers/bin/weed
rclone=$servers/bin/rclone
[ -x "$weed" ] && [ -x "$rclone" ] || { echo "bench/remote.sh: no SeaweedFS or rclone in $servers: run scripts/install-deps.sh" >&2; exit 1; }
bin=$here/target/release/crossback
(cd "$here" && cargo build --release --locked -q)
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/crossback-rbench.XXXXXX")
export CROSSBACK_SYSTEM_ROOT=$work/system-root
export CROSSBACK_SCRYPT_WORK_FACTOR=12
. "$here/bench/lib.sh"
# A free port whose gRPC twin (SeaweedFS listens on port + 10000 too) is free as well.
port() { python3 -c '
import random, socket
while True:
    p = random.randrange(20000, 45000)
    try:
        for q in (p, p + 10000):
            socket.socket().bind(("127.0.0.1", q))
        print(p); break
    except OSError:
        pass'; }
wait_port() { for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened: $2 says" >&2; tail -20 "$2" >&2; exit 1; }

# The store.
mkdir -p "$work/s3/master" "$work/s3/v1" "$work/s3/filer"
mp=$(port); vp=$(port); fp=$(port); sp=$(port)
key=benchkey; secret=benchsecret0123456789
printf '{"identities":[{"name":"b","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' "$key" "$secret" > "$work/s3/s3.json"
"$weed" master -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$mp" -mdir="$work/s3/master" -volumeSizeLimitMB=256 > "$work/s3/master.log" 2>&1 & pids+=($!)
wait_port "$mp" "$work/s3/master.log"
"$weed" volume -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$vp" -dir="$work/s3/v1" -mserver="127.0.0.1:$mp" -max=100 > "$work/s3/v1.log" 2>&1 & pids+=($!)
wait_port "$vp" "$work/s3/v1.log"
"$weed" filer -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$fp" -master="127.0.0.1:$mp" -defaultStoreDir="$work/s3/filer" -s3 -s3.port="$sp" \
  -s3.config="$work/s3/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 -metricsPort=0 > "$work/s3/filer.log" 2>&1 & pids+=($!); gateway=$!
wait_port "$sp" "$work/s3/filer.log"
echo "s3.bucket.create -name bench" | "$weed" shell -master="127.0.0.1:$mp" | grep -q "created bucket"
endpoint=http://127.0.0.1:$sp
export RCLONE_CONFIG_STORE_TYPE=s3 RCLONE_CONFIG_STORE_PROVIDER=SeaweedFS RCLONE_CONFIG_STORE_ENDPOINT=$endpoint
export RCLONE_CONFIG_STORE_ACCESS_KEY_ID=$key RCLONE_CONFIG_STORE_SECRET_ACCESS_KEY=$secret
rcl() { "$rclone" --config /dev/null "$@"; }

# The system and the backup disk.
disk root 256M; root=$DEV; disk home "$((size + 256))M"; home=$DEV
disk slota "$((size + 512))M"; sa=$DEV; disk slotb "$((size + 512))M"; sb=$DEV
mkdir -p "$work/m"; mount "$root" "$work/m"
mkdir -p "$work/m/etc" "$work/m/usr/lib" "$work/m/sbin" "$work/m/home"
printf 'ID=bench\nNAME="Bench Linux"\nPRETTY_NAME="Bench Linux"\n' > "$work/m/usr/lib/os-release"
ln -s /usr/lib/os-release "$work/m/etc/os-release"
printf '#!/bin/sh\n' > "$work/m/sbin/init"; chmod 755 "$work/m/sbin/init"
printf 'UUID=%s / ext4 defaults 0 1\nUUID=%s /home ext4 defaults 0 2\n' "$(blkid -p -s UUID -o value "$root")" "$(blkid -p -s UUID -o value "$home")" > "$work/m/etc/fstab"
umount "$work/m"; mount "$home" "$work/m"
mkdir "$work/m/ann"; echo "one small file" > "$work/m/ann/note.txt"
for i in $(seq 0 $((size / 64 - 1))); do dd if=/dev/urandom of="$work/m/ann/big$i" bs=1M count=64 status=none; done
umount "$work/m"
cfg=$work/config.toml
echo "bench passphrase" > "$work/pass"
"$bin" --config "$cfg" init --yes --devices "$root,$home,$sa,$sb" >/dev/null
"$bin" --config "$cfg" media prepare "$sa" "$sb" >/dev/null
sys=$(grep -m1 '^name = ' "$cfg" | cut -d'"' -f2)
"$bin" --config "$cfg" backup >/dev/null
printf 'access_key_id = "%s"\nsecret_access_key = "%s"\n' "$key" "$secret" > "$work/creds"; chmod 600 "$work/creds"
# The sealed generation's files, as rclone will read them: the slot mounted read-only.
mkdir -p "$work/slot"
gslot=""
for d in "$sa" "$sb"; do
  mount -o ro "$d" "$work/slot"; mnts+=("$work/slot")
  g=$(ls -d "$work/slot"/crossback/gen-* 2>/dev/null | head -1 || true)
  [ -n "$g" ] && { gslot=$d; gen=${g##*/}; bytes=$(du -sb "$g" | cut -f1); }
  umount "$work/slot"; unset 'mnts[-1]'
done
[ -n "$gslot" ] || { echo "no generation on either slot" >&2; exit 1; }

# An age identity that also unlocks the remote's key: the tools' restore uses it.
age-keygen -o "$work/id.key" 2>/dev/null
recipient=$(age-keygen -y "$work/id.key")
wrote() { awk '/^wchar/ {print $2}' "/proc/$gateway/io"; }

declare -a tp mp_ mp_r tr tc td tt rd rs rp rpa
for i in $(seq "$runs"); do
  "$bin" --config "$cfg" --passphrase-file "$work/pass" remote add "r$i" s3://bench/cb --endpoint "$endpoint" --credentials "$work/creds" --machine "m$i" --recipient "$recipient" >/dev/null
  # crossback push (reads the slot itself, read-only).
  drop; /usr/bin/time -o "$work/t" -f "%e %M" "$bin" --config "$cfg" push "r$i" > "$work/push.out"
  read -r t m < "$work/t"; tp+=("$t"); mp_+=("$m")
  # rclone copy of the same files from the slot, to another prefix of the same store.
  mount -o ro "$gslot" "$work/slot"; mnts+=("$work/slot")
  drop; /usr/bin/time -o "$work/t" -f "%e %M" "$rclone" --config /dev/null copy "$work/slot/crossback/$gen" "store:bench/rclone-$i" --s3-chunk-size 16M --transfers 4
  read -r t m < "$work/t"; tr+=("$t"); mp_r+=("$m")
  umount "$work/slot"; unset 'mnts[-1]'
  # The whole system back from the remote, against rclone's download of the same objects.
  rm -rf "$work/to" "$work/down"
  drop; s=$(now)
  "$bin" --config "$cfg" --passphrase-file "$work/pass" restore "$sys" --to "$work/to" --remote "r$i" > "$work/restore.out"
  tc+=("$(echo "$(now) - $s" | bc)")
  drop; s=$(now)
  rcl copy "store:bench/cb/m$i/$gen" "$work/down" --transfers 4
  td+=("$(echo "$(now) - $s" | bc)")
  # The same download, then a local restore with the tools (the remote's key unwrapped beforehand).
  [ -f "$work/remote$i.key" ] || { rcl copyto "store:bench/cb/m$i/media-key.recipients.age" "$work/wrapped$i.age"; age -d -i "$work/id.key" -o "$work/remote$i.key" "$work/wrapped$i.age"; }
  rm -rf "$work/down" "$work/peer"; mkdir -p "$work/peer/home"
  drop; s=$(now)
  rcl copy "store:bench/cb/m$i/$gen" "$work/down" --transfers 4
  for a in root:. home:home; do
    age -d -i "$work/remote$i.key" "$work/down/$sys/${a%%:*}.tar.zst.age" | zstd -dc -q | tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf - -C "$work/peer/${a#*:}"
  done
  sync -f "$work/peer"
  tt+=("$(echo "$(now) - $s" | bc)")
  cmp -s "$work/peer/home/ann/note.txt" "$work/to/home/ann/note.txt" || { echo "the tools' restore and crossback's differ" >&2; exit 1; }
  # One small file: what it reads, by crossback's count and by the store's.
  rm -rf "$work/one"
  w0=$(wrote)
  "$bin" --config "$cfg" --passphrase-file "$work/pass" restore "$sys" /home/ann/note.txt --to "$work/one" --remote "r$i" > "$work/one.out"
  rs+=("$(( $(wrote) - w0 ))")
  rd+=("$(sed -n 's/^read .*(\([0-9]*\) bytes) from remote.*/\1/p' "$work/one.out")")
  # Again through a proxy that counts what the store sends back (headers and bodies, per object).
  pp=$(port)
  python3 "$here/bench/countproxy.py" "$pp" "$sp" "$work/proxy.add" & proxy=$!; pids+=($proxy); wait_port "$pp" /dev/null
  "$bin" --config "$cfg" --passphrase-file "$work/pass" remote add "p$i" s3://bench/cb --endpoint "http://127.0.0.1:$pp" --credentials "$work/creds" --machine "m$i" >/dev/null
  kill -TERM "$proxy"; wait "$proxy" || true
  python3 "$here/bench/countproxy.py" "$pp" "$sp" "$work/proxy.count" & proxy=$!; pids+=($proxy); wait_port "$pp" /dev/null
  rm -rf "$work/one"
  "$bin" --config "$cfg" --passphrase-file "$work/pass" restore "$sys" /home/ann/note.txt --to "$work/one" --remote "p$i" > /dev/null
  kill -TERM "$proxy"; wait "$proxy" || true
  rp+=("$(head -1 "$work/proxy.count" | cut -d' ' -f1)")
  rpa+=("$(grep ' /bench/cb/m'"$i"'/'"$gen"'/'"$sys"'/home.tar.zst.age$' "$work/proxy.count" | cut -d' ' -f1)")
  cmp -s "$work/one/home/ann/note.txt" <(echo "one small file") || { echo "the small file came back different" >&2; exit 1; }
done
home_obj=$(du -b "$work/down/$sys/home.tar.zst.age" | cut -f1)
# What the one-file read must fetch at least, from the archive alone.
age -d -i "$work/remote$runs.key" -o "$work/home.tar.zst" "$work/down/$sys/home.tar.zst.age"
read -r need index_region held need_age < <(python3 "$here/bench/frames.py" "$work/home.tar.zst" ann/note.txt "$work/down/$sys/home.tar.zst.age")
rm -f "$work/home.tar.zst"
P=$(printf '%s\n' "${tp[@]}" | median); R=$(printf '%s\n' "${tr[@]}" | median)
C=$(printf '%s\n' "${tc[@]}" | median); D=$(printf '%s\n' "${td[@]}" | median); T=$(printf '%s\n' "${tt[@]}" | median)
S=$(printf '%s\n' "${rs[@]}" | median); PX=$(printf '%s\n' "${rp[@]}" | median); PA=$(printf '%s\n' "${rpa[@]}" | median)
M=$(printf '%s\n' "${mp_[@]}" | median); MR=$(printf '%s\n' "${mp_r[@]}" | median); B=$(printf '%s\n' "${rd[@]}" | median)
mib() { echo "$1" | awk '{printf "%.0f MiB", $1/1048576}'; }
echo
echo "generation: $(mib "$bytes") on the slot ($size MiB of random data in /home); median of $runs runs"
echo
echo "| measure | crossback | rclone copy | ratio |"
echo "| --- | --- | --- | --- |"
printf '| push / upload of the generation (s) | %s | %s | %.2f |\n' "$P" "$R" "$(echo "$P / $R" | bc -l)"
printf '| … throughput | %s/s | %s/s | |\n' "$(mib "$(echo "$bytes / $P" | bc)")" "$(mib "$(echo "$bytes / $R" | bc)")"
printf '| … peak RSS | %s | %s | |\n' "$(mib "$((M * 1024))")" "$(mib "$((MR * 1024))")"
printf '| whole system from the remote: restore / rclone copy down + age, zstd, tar (s) | %s | %s | %.2f |\n' "$C" "$T" "$(echo "$C / $T" | bc -l)"
printf '| whole system from the remote: restore / rclone copy down alone (s) | %s | %s | %.2f |\n' "$C" "$D" "$(echo "$C / $D" | bc -l)"
printf '| one small file: bytes the store sent (server count) | %s | | %.3f of the least it must fetch (%s: the age header and the 64 KiB chunks holding the index region of %s bytes and %s frame(s) of %s bytes in all); %.5f of the archive (%s) |\n' \
  "$S" "$(echo "$S / $need_age" | bc -l)" "$need_age" "$index_region" "$held" "$((need - index_region))" "$(echo "$S / $home_obj" | bc -l)" "$(mib "$home_obj")"
printf '| one small file: bytes the store sent through a counting proxy, all objects, headers included | %s | | %.3f of the least |\n' "$PX" "$(echo "$PX / $need_age" | bc -l)"
printf '| … of which the home archive | %s | | %.3f of the least |\n' "$PA" "$(echo "$PA / $need_age" | bc -l)"
printf '| one small file: bytes read (crossback count) | %s | | %.3f of the least |\n' "$B" "$(echo "$B / $need_age" | bc -l)"
echo
echo "runs: push ${tp[*]}; rclone up ${tr[*]}; restore ${tc[*]}; rclone down ${td[*]}; down + tools ${tt[*]}; push RSS KiB ${mp_[*]}; one file bytes, crossback ${rd[*]}, store ${rs[*]}, proxy ${rp[*]}, proxy home archive ${rpa[*]}"
