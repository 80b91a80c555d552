#!/usr/bin/env python3
"""A syslog-over-TLS collector for the tests (RFC 5425 octet counting):
accepts connections on loopback, checks nothing but the framing, and appends
each message as one line to --out, until --seconds have passed."""
import argparse
import socket
import ssl
import threading
import time


def serve(conn, out, lock):
    buf = b""
    conn.settimeout(1)
    while True:
        try:
            data = conn.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return
        if not data:
            return
        buf += data
        while b" " in buf:
            n, rest = buf.split(b" ", 1)
            length = int(n)
            if len(rest) < length:
                break
            msg, buf = rest[:length], rest[length:]
            with lock, open(out, "ab") as f:
                f.write(msg.replace(b"\n", b" ") + b"\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=30)
    a = p.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    sock = socket.create_server(("127.0.0.1", a.port))
    sock.settimeout(0.5)
    lock = threading.Lock()
    end = time.time() + a.seconds
    open(a.out, "wb").close()
    print("ready", flush=True)
    while time.time() < end:
        try:
            raw, _ = sock.accept()
        except socket.timeout:
            continue
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
        except ssl.SSLError:
            continue
        threading.Thread(target=serve, args=(conn, a.out, lock), daemon=True).start()


if __name__ == "__main__":
    main()
