"""An SMTP server for the e-mail notification tests: a real one (PyPI `aiosmtpd`, installed by
scripts/tools) on a loopback port, parsing each message with Python's own `email` package,
never with threatmon's code.

It logs each message as one JSON line: the envelope (MAIL FROM, RCPT TO), the headers that
matter (Subject, From, To, Message-ID, Content-Type), the Content-Type of every MIME part, the text and
HTML bodies (decoded), and the raw message. It answers `250 2.0.0 queued as smtp-<n>`.

    python smtp.py --port-file P --log L
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import time

from aiosmtpd.smtp import SMTP

parser = argparse.ArgumentParser()
parser.add_argument("--port-file", required=True)
parser.add_argument("--log", required=True)
args = parser.parse_args()


class Handler:
    def __init__(self):
        self.seen = 0

    async def handle_DATA(self, server, session, envelope):
        self.seen += 1
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        entry = {
            "n": self.seen,
            "at": time.time(),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": message["subject"],
            "from": message["from"],
            "to": message["to"],
            "message_id": message["message-id"],
            "content_type": message.get_content_type(),
            # Every part, the container included, depth first.
            "parts": [part.get_content_type() for part in message.walk()],
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
            "raw": raw.decode("utf-8", "replace"),
        }
        with open(args.log, "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")
        return f"250 2.0.0 queued as smtp-{self.seen}"


async def main():
    handler = Handler()
    loop = asyncio.get_running_loop()
    # Not aiosmtpd's Controller: with port 0 it cannot connect to itself to check that it is
    # up. The loop's own server takes a free port, and is listening once this returns.
    # hostname= spares a DNS lookup of this machine's name on every connection.
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="localhost", loop=loop), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    with open(args.port_file + ".tmp", "w", encoding="utf-8") as f:
        f.write(str(port))
    os.replace(args.port_file + ".tmp", args.port_file)
    await server.serve_forever()


asyncio.run(main())
