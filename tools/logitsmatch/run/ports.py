"""Loopback ports: a free one to name, a bound one to hand over (no window for another process)."""

from __future__ import annotations

import errno
import socket

from logitsmatch.errors import RunFailed


def free_loopback_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the caller retries on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bind_loopback(port: int = 0, what: str = "port") -> socket.socket:
    """A TCP socket bound (not yet listening) to 127.0.0.1:port; port 0 lets the kernel choose.

    Handing the bound socket to its user (pass_fds) leaves no window in which
    another process could take the port. A taken port is a RunFailed naming it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OverflowError:
        sock.close()
        raise RunFailed(f"{what} {port} is not a port number (0-65535)") from None
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise RunFailed(f"{what} 127.0.0.1:{port} is already in use") from None
        raise RunFailed(f"cannot bind {what} 127.0.0.1:{port}: {exc.strerror or exc}") from None
    return sock
