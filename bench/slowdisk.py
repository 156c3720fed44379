#!/usr/bin/python3
"""An image file served through FUSE no faster than a slow disk.

usage: /usr/bin/python3 bench/slowdisk.py IMAGE DIR [--write-mibs 80] [--read-mibs 110]

DIR/disk is IMAGE, read and written at most at the given speeds (a
token bucket per direction). Put a loop device on DIR/disk and a
filesystem on that: the page cache above it still takes writes at
memory speed until writeback or fsync, as with a real USB disk, so time
a job up to its final sync. Runs in the foreground until unmounted
(`fusermount -u DIR`). Needs python3-fusepy and root (allow_other).
"""
import argparse
import errno
import os
import stat
import threading
import time

import fusepy


class Pace:
    """Lets `n` bytes through at `rate` bytes/s, with 50 ms of credit at most."""

    def __init__(self, rate):
        self.rate = rate
        self.credit = rate * 0.05
        self.level = self.credit
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, n):
        with self.lock:
            now = time.monotonic()
            self.level = min(self.credit, self.level + (now - self.at) * self.rate)
            self.at = now
            self.level -= n
            late = -self.level / self.rate
        if late > 0:
            time.sleep(late)


class Disk(fusepy.Operations):
    def __init__(self, image, write_rate, read_rate):
        self.fd = os.open(image, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.write_pace = Pace(write_rate)
        self.read_pace = Pace(read_rate)

    def getattr(self, path, fh=None):
        now = time.time()
        if path == "/":
            return dict(st_mode=stat.S_IFDIR | 0o755, st_nlink=2, st_atime=now, st_mtime=now, st_ctime=now)
        if path == "/disk":
            return dict(st_mode=stat.S_IFREG | 0o600, st_nlink=1, st_size=self.size, st_atime=now, st_mtime=now, st_ctime=now)
        raise fusepy.FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", "disk"]

    def open(self, path, flags):
        if path != "/disk":
            raise fusepy.FuseOSError(errno.ENOENT)
        return 0

    def read(self, path, size, offset, fh):
        self.read_pace(size)
        return os.pread(self.fd, size, offset)

    def write(self, path, data, offset, fh):
        self.write_pace(len(data))
        return os.pwrite(self.fd, data, offset)

    def truncate(self, path, length, fh=None):
        raise fusepy.FuseOSError(errno.EPERM)

    def fsync(self, path, datasync, fh):
        os.fsync(self.fd)
        return 0

    def flush(self, path, fh):
        return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image")
    p.add_argument("dir")
    p.add_argument("--write-mibs", type=float, default=80)
    p.add_argument("--read-mibs", type=float, default=110)
    a = p.parse_args()
    disk = Disk(a.image, a.write_mibs * 2**20, a.read_mibs * 2**20)
    fusepy.FUSE(disk, a.dir, foreground=True, allow_other=True, direct_io=True, nothreads=False)


if __name__ == "__main__":
    main()
