"""Cost of an oversize request head, before and after the guarded protocol (issue 16.8).

    python bench/bench_http_head.py            # heads of 1, 8 and 32 MiB; 3000 small requests

One uvicorn server per variant, in this process's thread, serving a trivial ASGI app:
``plain`` is uvicorn's httptools protocol as ``spectral-api`` used it before; ``guarded``
is :func:`spectral_api.server.server_config` (16 KiB head limit).  For each head size a
client sends ``GET /`` with one header of that size while a second connection pings
``GET /`` every 5 ms; printed: the time until the server's reply (200 or 431), and the
worst ping latency during it (the event loop stalled by the parser).  Then the time per
request of 3000 small keep-alive requests on one connection.  Last, the protocol's own
cost without sockets: each protocol class is fed 20,000 keep-alive ``GET`` requests in
process (a transport that discards what is written, the trivial app), alternating the two
classes over 10 rounds; printed: the median and lowest CPU time per request of each.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import threading
import time
from typing import Any

import uvicorn

from spectral_api.server import HttpLimits, protocol_class, server_config
from spectral_core import Settings

MB = 1024 * 1024


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(variant: str) -> tuple[uvicorn.Server, int]:
    port = free_port()
    if variant == "plain":
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, http="httptools", log_config=None, lifespan="off"
        )
    else:
        settings = Settings(api_host="127.0.0.1", api_port=port)
        config = server_config(app, settings, lifespan="off")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, port


def reply_time(port: int, size: int) -> tuple[float, bytes]:
    head = b"GET / HTTP/1.1\r\nHost: b\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as s:
        started = time.perf_counter()
        got = b""

        def sender() -> None:
            try:
                s.sendall(head)
            except OSError:
                pass

        t = threading.Thread(target=sender)
        t.start()
        while b"\r\n" not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        elapsed = time.perf_counter() - started
        s.shutdown(socket.SHUT_RDWR)
        t.join()
    return elapsed, got.split(b"\r\n", 1)[0]


def pinger(port: int, stop: threading.Event, worst: list[float]) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        while not stop.is_set():
            started = time.perf_counter()
            s.sendall(b"GET / HTTP/1.1\r\nHost: p\r\n\r\n")
            data = b""
            while not data.endswith(b"ok"):
                data += s.recv(4096)
            worst[0] = max(worst[0], time.perf_counter() - started)
            time.sleep(0.005)


def per_request_us(port: int, n: int = 3000) -> float:
    with socket.create_connection(("127.0.0.1", port)) as s:
        started = time.perf_counter()
        for _ in range(n):
            s.sendall(b"GET / HTTP/1.1\r\nHost: p\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
            data = b""
            while not data.endswith(b"ok"):
                data += s.recv(4096)
        return (time.perf_counter() - started) / n * 1e6


class NullTransport(asyncio.Transport):
    """Takes what the protocol writes and drops it."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name in ("peername", "sockname") else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True


async def protocol_us(cls: Any, n: int) -> float:
    from uvicorn.server import ServerState

    config = uvicorn.Config(app, log_config=None, lifespan="off", http="httptools")
    config.load()
    proto = cls(config=config, server_state=ServerState(), app_state={})
    proto.connection_made(NullTransport())
    request = b"GET / HTTP/1.1\r\nHost: p\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
    started = time.process_time()  # this process's CPU: other load on the machine is not counted
    for _ in range(n):
        proto.data_received(request)
        while not proto.cycle.response_complete:
            await asyncio.sleep(0)
    elapsed = time.process_time() - started
    proto.connection_lost(None)
    return elapsed / n * 1e6


def in_process() -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    guarded = protocol_class(HttpLimits())
    times: dict[str, list[float]] = {"plain": [], "guarded": []}
    for _ in range(10):
        for name, cls in (("plain", HttpToolsProtocol), ("guarded", guarded)):
            times[name].append(asyncio.run(protocol_us(cls, 20_000)))
    for name, values in times.items():
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(
            f"{name:8s} in process: median {statistics.median(values):5.1f}, lowest "
            f"{min(values):5.1f} us CPU/request ({rounds})"
        )


def main() -> None:
    for variant in ("plain", "guarded"):
        server, port = start(variant)
        for size in (1 * MB, 8 * MB, 32 * MB):
            stop = threading.Event()
            worst = [0.0]
            ping = threading.Thread(target=pinger, args=(port, stop, worst))
            ping.start()
            time.sleep(0.05)
            elapsed, status = reply_time(port, size)
            stop.set()
            ping.join()
            print(
                f"{variant:8s} head {size // MB:2d} MiB: reply {elapsed * 1000:8.1f} ms "
                f"({status.decode()}), worst ping {worst[0] * 1000:7.1f} ms"
            )
        print(f"{variant:8s} small requests: {per_request_us(port):6.1f} us/request")
        server.should_exit = True
        time.sleep(0.5)
    in_process()


if __name__ == "__main__":
    main()
