#!/usr/bin/env python3
"""Types at a guest's serial console as a person would: waits for what the
screen says, then answers. QEMU serves the console on a Unix socket
(-chardev socket,server=on); everything read is kept in LOG.

Usage: console.py SOCKET LOG TIMEOUT STEP...
Each STEP is EXPECT=>ANSWER: EXPECT a regular expression the console's
output (since the last step) must show within TIMEOUT seconds, ANSWER what
is typed then, with a newline ("\\n" in it types one too). In ANSWER,
{line:TEXT} is the number of the newest listed line "N) TEXT".
An ANSWER of {wait} types nothing. The time of each step since the start
goes to standard error.
"""
import re
import socket
import sys
import time


def connect(path, deadline):
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.time() > deadline:
                raise SystemExit(f"console: no console at {path}")
            time.sleep(0.2)


def main():
    path, log, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    steps = [a.split("=>", 1) for a in sys.argv[4:]]
    start = time.time()
    s = connect(path, start + 60)
    s.settimeout(1)
    seen = ""
    mark = 0
    with open(log, "a", encoding="utf-8", errors="replace") as out:
        for n, (expect, answer) in enumerate(steps, 1):
            deadline = time.time() + timeout
            while not re.search(expect, seen[mark:]):
                if time.time() > deadline:
                    tail = seen[-2000:]
                    raise SystemExit(f"console: step {n}: no /{expect}/ within {timeout:.0f} s; the console's end:\n{tail}")
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    raise SystemExit(f"console: step {n}: the guest went away before /{expect}/; the console's end:\n{seen[-2000:]}")
                text = data.decode("utf-8", errors="replace")
                out.write(text)
                out.flush()
                seen += text
            m = re.search(expect, seen[mark:])
            mark += m.end()
            print(f"console: +{time.time() - start:.1f} s: step {n}: /{expect}/", file=sys.stderr)
            if answer == "{wait}":
                continue

            def line(match):
                found = re.findall(r"(?m)^\s*(\d+)\) " + re.escape(match.group(1)), seen)
                if not found:
                    raise SystemExit(f"console: step {n}: no listed line {match.group(1)!r}")
                return found[-1]

            typed = re.sub(r"\{line:([^}]*)\}", line, answer).replace("\\n", "\n")
            # A moment to read, as a person does (a prompt that turns echo
            # off does so after it is printed).
            time.sleep(0.5)
            # One character at a time, as a person types (a serial line
            # with no flow control loses a burst).
            for ch in typed + "\n":
                s.sendall(ch.encode())
                time.sleep(0.02)


if __name__ == "__main__":
    main()
