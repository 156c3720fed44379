#!/usr/bin/env python3
"""A counting proxy for an S3 store on 127.0.0.1: forwards every request as
it came (the Host header too, which the request's signature covers) and
counts, per object path, the bytes of the responses it passes back — the
status line, headers and body, what the store sent for each request.

Usage: countproxy.py LISTEN_PORT UPSTREAM_PORT COUNT_FILE
On SIGTERM or SIGINT it writes "<total> <requests>" and one "<bytes> <path>"
line per path to COUNT_FILE."""
import http.client
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

listen, upstream, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
counts, lock = {}, threading.Lock()
requests = [0]


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def relay(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        conn = http.client.HTTPConnection("127.0.0.1", upstream)
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for k, v in self.headers.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        head = f"HTTP/1.1 {r.status} {r.reason}\r\n"
        self.send_response_only(r.status, r.reason)
        # A HEAD's Content-Length is the object's; another response's, its body's.
        length = r.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
                head += f"{k}: {v}\r\n"
        if length is not None:
            self.send_header("Content-Length", length)
            head += f"Content-Length: {length}\r\n"
        head += "\r\n"
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        path = self.path.split("?")[0]
        with lock:
            counts[path] = counts.get(path, 0) + len(head) + (0 if self.command == "HEAD" else len(data))
            requests[0] += 1
        conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = relay

    def log_message(self, *args):
        pass


def done(*_):
    with open(out, "w") as f:
        f.write(f"{sum(counts.values())} {requests[0]}\n")
        for p, n in sorted(counts.items()):
            f.write(f"{n} {p}\n")
    sys.exit(0)


signal.signal(signal.SIGTERM, done)
signal.signal(signal.SIGINT, done)
ThreadingHTTPServer(("127.0.0.1", listen), Proxy).serve_forever()
