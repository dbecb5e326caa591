"""``/metrics``, ``/health/live`` and ``/health/ready`` for processes that serve no API (``broker worker``,
``broker scheduler``), on their own port (``CASEBRIDGE_METRICS_PORT``)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog

from broker.operations.health import Health, live
from broker.operations.metrics import CONTENT_TYPE, exposition

log = structlog.get_logger("casebridge.operations")


def serve_operations(host: str, port: int, health: Health) -> ThreadingHTTPServer:
    """Serve on a daemon thread; raises OSError if the port is taken."""

    class Endpoint(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, exposition(), CONTENT_TYPE)
            elif path in ("/health", "/health/live"):
                self._answer(200, json.dumps(live()).encode(), "application/json")
            elif path == "/health/ready":
                ok, body = health.ready()
                self._answer(200 if ok else 503, json.dumps(body).encode(), "application/json")
            else:
                self._answer(404, b'{"error": "not_found"}', "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, port), Endpoint)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="operations-endpoint",
                     daemon=True).start()
    log.info("operations.listening", host=host, port=server.server_address[1])
    return server
