#!/usr/bin/env python3
"""What a single-file read of a crossback archive must fetch at least, from
the archive alone and GNU tar: the bytes after the last data frame (index,
frame table, footer) plus the zstd frames that hold the member's tar header
and data. Independent of crossback: the frames are found by walking zstd's
frame and block headers, their tar offsets by decompressing each with the
zstd tool, the member's tar offset by `tar -tR` (GNU tar's block numbers).

With the archive as stored encrypted (AGE_FILE), also what that is in the
age file: its header and nonce (read to check it), and every 64 KiB chunk
(with its 16-byte tag) that holds a byte of those ranges — age decrypts
whole chunks, so a reader cannot fetch less.

Usage: frames.py PLAIN_ARCHIVE MEMBER [AGE_FILE]   (MEMBER as tar lists it, e.g. ann/note.txt)
Prints: "<bytes> <index_region> <frames> [<bytes in the age file>]" """
import struct
import subprocess
import sys

ZSTD_MAGIC = 0xFD2FB528


def frames(data):
    """(offset, length) of each zstd data frame; skippable frames left out."""
    out, off = [], 0
    while off < len(data):
        magic = struct.unpack_from("<I", data, off)[0]
        if magic & 0xFFFFFFF0 == 0x184D2A50:
            size = struct.unpack_from("<I", data, off + 4)[0]
            off += 8 + size
            continue
        if magic != ZSTD_MAGIC:
            raise SystemExit(f"no zstd frame at {off}")
        start = off
        fhd = data[off + 4]
        fcs_flag, single, checksum, dict_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
        p = off + 5 + (0 if single else 1) + [0, 1, 2, 4][dict_flag]
        p += [1 if single else 0, 2, 4, 8][fcs_flag]
        while True:
            h = data[p] | data[p + 1] << 8 | data[p + 2] << 16
            last, btype, bsize = h & 1, (h >> 1) & 3, h >> 3
            p += 3 + (1 if btype == 1 else bsize)
            if last:
                break
        p += 4 if checksum else 0
        out.append((start, p - start))
        off = p
    return out


def main():
    path, member = sys.argv[1], sys.argv[2]
    data = open(path, "rb").read()
    fr = frames(data)
    # Each frame's place in the tar stream: its decompressed length.
    u, spans = 0, []
    for off, length in fr:
        n = len(subprocess.run(["zstd", "-dc"], input=data[off:off + length], capture_output=True, check=True).stdout)
        spans.append((off, length, u, n))
        u += n
    listing = subprocess.run(["bash", "-c", f"zstd -dc '{path}' | tar -tvR -f -"], capture_output=True, check=True, text=True).stdout
    block, size = None, None
    for line in listing.splitlines():
        if line.endswith(" " + member) or line.endswith(" ./" + member):
            block = int(line.split(":")[0].split()[1])
            size = int(line.split()[4])
    if block is None:
        raise SystemExit(f"{member} not in the archive")
    # The member's first block may be its PAX header: from there to the end of its data.
    first, last = block * 512, block * 512 + 512 + size
    index_region = len(data) - (fr[-1][0] + fr[-1][1])
    held = [s for s in spans if s[2] < last and s[2] + s[3] > first - 1536]
    need = index_region + sum(s[1] for s in held)
    out = [need, index_region, len(held)]
    if len(sys.argv) > 3:
        sealed = open(sys.argv[3], "rb").read(1 << 20)
        header = sealed.index(b"\n", sealed.index(b"\n--- ") + 1) + 1
        ranges = [(len(data) - index_region, len(data))] + [(s[0], s[0] + s[1]) for s in held]
        chunks = {c for a, b in ranges for c in range(a // 65536, (b - 1) // 65536 + 1)}
        last_chunk = (len(data) - 1) // 65536
        size = lambda c: (len(data) - c * 65536 if c == last_chunk else 65536) + 16
        out.append(header + 16 + sum(size(c) for c in chunks))
    print(*out)


main()
