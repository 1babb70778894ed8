"""A webhook receiver for the notification tests: a real HTTP server on a loopback port.

It verifies every request's signature with the Standard Webhooks reference library (PyPI
`standardwebhooks`, installed by scripts/tools), never with threatmon's own code, and logs
each request as one JSON line. It answers 500 to the first --fail-first requests, then 200;
with --hang it never answers (to test that a hanging receiver is cut and blocks nobody).

    python webhook.py --port-file P --log L [--fail-first N] [--hang]
    (the secret, whsec_…, comes in the RECEIVER_SECRET environment variable)
"""

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

parser = argparse.ArgumentParser()
parser.add_argument("--port-file", required=True)
parser.add_argument("--log", required=True)
parser.add_argument("--fail-first", type=int, default=0)
parser.add_argument("--hang", action="store_true")
args = parser.parse_args()

secret = os.environ.get("RECEIVER_SECRET", "")
lock = threading.Lock()
seen = 0


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global seen
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        if args.hang:
            time.sleep(3600)
            return
        verified, error = False, None
        if secret:
            try:
                Webhook(secret).verify(body, dict(self.headers.items()))
                verified = True
            except WebhookVerificationError as e:
                error = str(e)
        with lock:
            seen += 1
            status = 500 if seen <= args.fail_first else 200
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            entry = {
                "n": seen,
                "at": time.time(),
                "path": self.path,
                "webhook_id": self.headers.get("webhook-id"),
                "verified": verified,
                "verify_error": error,
                "status": status,
                "body": parsed,
            }
            with open(args.log, "a", encoding="utf-8") as log:
                log.write(json.dumps(entry) + "\n")
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok" if status == 200 else b"try again")

    def log_message(self, *_):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(args.port_file + ".tmp", "w", encoding="utf-8") as f:
    f.write(str(server.server_address[1]))
os.replace(args.port_file + ".tmp", args.port_file)
server.serve_forever()
