"""run.ports' loopback binding, and the listening-socket scan (support.sockets) the loopback test relies on."""

from __future__ import annotations

import os
import socket

import pytest

from logitsmatch.errors import RunFailed
from logitsmatch.run.ports import bind_loopback
from support.sockets import Listener, listening_sockets


def test_loopback_helpers():
    sock = bind_loopback(0)
    try:
        sock.listen()
        port = sock.getsockname()[1]
        found = [listener for listener in listening_sockets([os.getpid()]) if listener.port == port]
        assert found == [Listener(os.getpid(), "127.0.0.1", port)] and found[0].is_loopback()
        with pytest.raises(RunFailed, match=f"127.0.0.1:{port} is already in use"):
            bind_loopback(port)
    finally:
        sock.close()
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):  # what the scan must catch
        with socket.socket(family, socket.SOCK_STREAM) as exposed:
            exposed.bind((host, 0))
            exposed.listen()
            port = exposed.getsockname()[1]
            found = [listener for listener in listening_sockets([os.getpid()]) if listener.port == port]
            assert [listener.address for listener in found] == [host] and not found[0].is_loopback()
    assert Listener(1, "::ffff:127.0.0.1", 1).is_loopback() and Listener(1, "::1", 1).is_loopback()
    assert not Listener(1, "::", 1).is_loopback() and not Listener(1, "0.0.0.0", 1).is_loopback()


