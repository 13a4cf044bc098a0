"""The listening TCP sockets of a set of processes, read from /proc: how the tests see what a run exposes.

The harness itself never scans sockets (it binds loopback only, run.ports); the loopback test and
test_ports check that claim from outside, as any process on the host could.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    pid: int
    address: str  # "127.0.0.1", "::", "0.0.0.0", ...
    port: int

    def is_loopback(self) -> bool:
        address = ipaddress.ip_address(self.address)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port} (pid {self.pid})"


def _decode_address(text: str) -> tuple[str, int]:
    """'0100007F:1F90' (little-endian words, as /proc/net/tcp{,6} print them) -> ('127.0.0.1', 8080)."""
    hex_address, hex_port = text.split(":")
    raw = bytes.fromhex(hex_address)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw)), int(hex_port, 16)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def listening_sockets(pids: list[int]) -> list[Listener]:
    """Every TCP socket in LISTEN state that one of ``pids`` holds open.

    /proc/PID/net/tcp{,6} list the whole network namespace; a socket belongs to
    a process when the inode of one of its /proc/PID/fd links matches.
    """
    found: list[Listener] = []
    tables: dict[str, list[str]] = {}
    for pid in pids:
        inodes = _socket_inodes(pid)
        if not inodes:
            continue
        for table in ("tcp", "tcp6"):
            if table not in tables:
                try:
                    tables[table] = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
                except OSError:
                    continue
            for line in tables.get(table, []):
                fields = line.split()
                if len(fields) > 9 and fields[3] == TCP_LISTEN and fields[9] in inodes:
                    address, port = _decode_address(fields[1])
                    found.append(Listener(pid, address, port))
    return found
