"""The suite-wide guard really blocks the internet and really allows loopback."""

from __future__ import annotations

import socket
import threading

import pytest


def test_outbound_connections_fail() -> None:
    with pytest.raises(OSError, match="attempted"):
        socket.create_connection(("93.184.216.34", 443), timeout=1)
    with pytest.raises(OSError, match="attempted"):
        socket.getaddrinfo("huggingface.co", 443)


def test_loopback_still_works() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted = threading.Thread(target=lambda: server.accept()[0].close())
    accepted.start()
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    accepted.join(timeout=2)
    server.close()
