"""Real notification endpoints on loopback: an SMTP server (aiosmtpd) and an HTTP receiver
(the ``smtp_server`` and ``webhook_receiver`` fixtures of tests/conftest.py).

Both are function-scoped and ready when the fixture returns. ``smtp_server.stop()`` and
``.start()`` keep the port, so a test can take the mail server down and bring it back;
``webhook_receiver.status`` makes the endpoint fail.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import sys
import threading
import time
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


def unused_port() -> int:
    """A loopback port nothing listens on (connecting to it is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class _Mailbox:
    """The aiosmtpd handler: keeps every message; answers 550 to refused recipients."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str | None, list[str]]] = []
        self.refuse: set[str] = set()
        self.busy: set[str] = set()
        self.lock = threading.Lock()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such user here"
        if address in self.busy:
            return "451 4.3.0 Mailbox temporarily unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


class SmtpServer:
    """A running aiosmtpd server on 127.0.0.1; ``stop``/``start`` keep its port."""

    def __init__(self) -> None:
        self.port = unused_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.mailbox = _Mailbox()
        self._controller: Controller | None = None

    @property
    def messages(self) -> list[Message]:
        return self.mailbox.messages

    @property
    def refuse(self) -> set[str]:
        """Recipients answered ``550`` (permanent); ``busy`` ones get ``451``."""
        return self.mailbox.refuse

    @property
    def busy(self) -> set[str]:
        return self.mailbox.busy

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        if self._controller is not None:
            return
        deadline = time.monotonic() + 10
        while True:  # the port may linger a moment after stop()
            controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port,
                                    ready_timeout=5.0)
            try:
                controller.start()
                break
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._controller = controller

    def stop(self) -> None:
        """Close the listener: connections are refused until ``start()``."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: WebhookReceiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timed out) resets the connection: not an error here."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        receiver = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = None
        with receiver.lock:
            receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, parsed))
            receiver.paths.append(self.path)
            status, delay = receiver.status, receiver.delay
        if delay:
            time.sleep(delay)
        answer = b'{"secret": "the endpoint body is never reported"}'
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", f"{receiver.url}/moved")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # keep the test output quiet


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1: every POST is kept as (headers, JSON); it answers
    ``status`` (default 200) after ``delay`` seconds; a 3xx points elsewhere."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], Any]] = []
        self.paths: list[str] = []
        self.status = 200
        self.delay = 0.0
        self.lock = threading.Lock()
        self._server = _Receiver(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/notify"
        # The socket listens from here on: connections queue until serve_forever runs.
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
