"""The embedded server's port is kept across runs (a stable URL)."""

from __future__ import annotations

import socket

from spectral_core.embedded import _port_is_free


def test_a_port_held_only_by_time_wait_connections_counts_as_free() -> None:
    """After the embedded server stops, the connections it closed first linger in
    TIME_WAIT on its port for a minute.  PostgreSQL binds with SO_REUSEADDR, so the port
    is usable at once: the next `spectral up` must take the same port (and print the same
    URL), not treat it as taken (a CI run printed a new URL on the second `up`)."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        server, _ = listener.accept()
        server.close()  # the server side closes first: its end goes to TIME_WAIT
        client.recv(1)  # the FIN arrived
        client.close()
    assert _port_is_free(port)
    with socket.socket() as busy:  # a port someone listens on is not free
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert not _port_is_free(busy.getsockname()[1])
