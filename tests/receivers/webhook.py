"""A webhook receiver for the notification tests: a real HTTP server on a loopback port.

It verifies every request's signature with the Standard Webhooks reference library (PyPI
`standardwebhooks`, installed by scripts/tools), never with threatmon's own code, and logs
each request as one JSON line. It answers 500 (or --fail-status, with a Retry-After header of
--retry-after seconds when given) to the first --fail-first requests, then 200;
with --hang it never answers (to test that a hanging receiver is cut and blocks nobody), and
with --log-hung too it logs each request it holds when it arrives ("status": null). With
--delay-ms it waits that long before answering each request (a slow receiver, so that many
requests are in flight at once); a request is logged when it is answered, "received_at" is
when it arrived.

    python webhook.py --port-file P --log L [--fail-first N [--fail-status CODE]
        [--retry-after S]] [--hang [--log-hung]] [--delay-ms MS]
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
parser.add_argument("--fail-status", type=int, default=500)
parser.add_argument("--retry-after", default=None)
parser.add_argument("--hang", action="store_true")
parser.add_argument("--log-hung", action="store_true")
parser.add_argument("--delay-ms", type=int, default=0)
args = parser.parse_args()

secret = os.environ.get("RECEIVER_SECRET", "")
lock = threading.Lock()
seen = 0


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global seen
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        received_at = time.time()
        if args.hang and not args.log_hung:
            time.sleep(3600)
            return
        verified, error = False, None
        if secret:
            try:
                Webhook(secret).verify(body, dict(self.headers.items()))
                verified = True
            except WebhookVerificationError as e:
                error = str(e)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if args.hang:
            with lock:
                self.log_entry(None, received_at, verified, error, None, parsed)
            time.sleep(3600)
            return
        if args.delay_ms > 0:
            time.sleep(args.delay_ms / 1000)
        with lock:
            seen += 1
            status = args.fail_status if seen <= args.fail_first else 200
            self.log_entry(seen, received_at, verified, error, status, parsed)
        try:
            self.send_response(status)
            if status != 200 and args.retry_after is not None:
                self.send_header("retry-after", args.retry_after)
            self.send_header("content-type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"try again")
        except (BrokenPipeError, ConnectionResetError):
            # The sender went away (an alerter killed mid-attempt): logged as answered.
            pass

    def log_entry(self, n, received_at, verified, error, status, parsed):
        """Appends one line; the caller holds the lock."""
        entry = {
            "n": n,
            "at": time.time(),
            "received_at": received_at,
            "path": self.path,
            "webhook_id": self.headers.get("webhook-id"),
            "verified": verified,
            "verify_error": error,
            "status": status,
            "body": parsed,
        }
        with open(args.log, "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")

    def log_message(self, *_):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(args.port_file + ".tmp", "w", encoding="utf-8") as f:
    f.write(str(server.server_address[1]))
os.replace(args.port_file + ".tmp", args.port_file)
server.serve_forever()
