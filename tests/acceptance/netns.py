"""A network namespace joined to the host by a veth pair, and a TCP forwarder on the host
side, so a process in the namespace reaches the test server through a link that a test can
blackhole: a real partition (packets dropped both ways, no FIN, no RST)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from tests.tools import missing_tool, require_tool


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Namespace:
    def __init__(self, name: str, host_dev: str, host_ip: str, ns_ip: str) -> None:
        self.name = name
        self.host_dev = host_dev
        self.host_ip = host_ip
        self.ns_ip = ns_ip

    def prefix(self) -> list[str]:
        """argv prefix that runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        """Blackhole routes on both sides: from now on every packet either way is
        silently discarded (no FIN, no RST, no ICMP error), as in a partition."""
        _ip("netns", "exec", self.name, "ip", "route", "add", "blackhole", f"{self.host_ip}/32")
        _ip("route", "add", "blackhole", f"{self.ns_ip}/32")

    def heal(self) -> None:
        _ip("netns", "exec", self.name, "ip", "route", "del", "blackhole", f"{self.host_ip}/32")
        _ip("route", "del", "blackhole", f"{self.ns_ip}/32")


@contextmanager
def namespace() -> Iterator[Namespace]:
    """A fresh namespace (where namespaces cannot be made, no root, no iproute2 or no
    CAP_NET_ADMIN, the test skips locally and fails under CI=true: tests/tools.py)."""
    if os.geteuid() != 0:
        missing_tool("needs root to make a network namespace")
    require_tool("ip", "/usr/sbin/ip", "/sbin/ip")
    tag = f"{os.getpid() % 10000}{random.randrange(100, 999)}"
    name, host_dev, ns_dev = f"spf{tag}", f"vh{tag}", f"vn{tag}"
    subnet = random.randrange(1, 250)
    host_ip, ns_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        missing_tool(f"cannot make a network namespace: {exc.stderr!r}")
    try:
        _ip("link", "add", host_dev, "type", "veth", "peer", "name", ns_dev)
        _ip("link", "set", ns_dev, "netns", name)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_dev)
        _ip("link", "set", host_dev, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_dev)
        _ip("netns", "exec", name, "ip", "link", "set", ns_dev, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield Namespace(name, host_dev, host_ip, ns_ip)
    finally:
        with suppress(subprocess.CalledProcessError):
            _ip("route", "del", "blackhole", f"{ns_ip}/32")
        with suppress(subprocess.CalledProcessError):
            _ip("link", "del", host_dev)
        with suppress(subprocess.CalledProcessError):
            _ip("netns", "del", name)


class Forwarder:
    """Listens on ``listen_ip`` and copies bytes to and from ``target`` (threads)."""

    def __init__(self, listen_ip: str, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server((listen_ip, 0))
        self.port = int(self.server.getsockname()[1])
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._closed = True
        self.server.close()
        for s in self._sockets:
            s.close()
