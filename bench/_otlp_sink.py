"""A local OTLP/HTTP sink for ``bench/paired_commits.py --sdk``: accepts and drops exports.

    python bench/_otlp_sink.py            # prints its port on the first line of stdout

Answers every ``POST`` (``/v1/traces``, ``/v1/metrics``) with ``200`` and an empty
protobuf body (an ``Export*ServiceResponse`` with no partial failure), so the SDK's
``BatchSpanProcessor`` and OTLP exporter do all their work (batching, protobuf encoding,
the HTTP request) and nothing is stored.  ``GET /stats`` answers how many requests and
bytes each path received: the proof that the configured run exported at all.  Runs in its
own process so its CPU is not the load generator's.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()
_stats: dict[str, dict[str, int]] = {}


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        with _lock:
            s = _stats.setdefault(self.path, {"requests": 0, "bytes": 0})
            s["requests"] += 1
            s["bytes"] += n
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        with _lock:
            body = json.dumps(_stats).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
