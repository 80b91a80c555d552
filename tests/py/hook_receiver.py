#!/usr/bin/env python3
"""A webhook receiver for Custos's tests, on loopback: checks each
delivery's X-Custos-Signature (HMAC-SHA256 of the body under --secret) and
appends one JSON line per delivery to --log: delivery id, event header,
whether the signature is valid, and the body. Answers 200 to every POST."""
import argparse
import hashlib
import hmac
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--secret", required=True)
    a.add_argument("--log", required=True)
    args = a.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            want = "sha256=" + hmac.new(args.secret.encode(), body, hashlib.sha256).hexdigest()
            got = self.headers.get("X-Custos-Signature", "")
            entry = {
                "delivery": self.headers.get("X-Custos-Delivery"),
                "event": self.headers.get("X-Custos-Event"),
                "valid": hmac.compare_digest(want, got),
                "body": json.loads(body or b"null"),
            }
            with open(args.log, "a") as f:
                f.write(json.dumps(entry) + "\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
