"""torchrun's agent for one run: ``torch.distributed.run`` with its rendezvous store on loopback.

Started by the launcher as ``python -m logitsmatch.rank.agent TORCHRUN_ARGS``.
torch's rendezvous store (a TCPStore) listens on every interface even when
told 127.0.0.1 unless it is handed an already-bound socket; the launcher binds
127.0.0.1 itself and passes the socket (``STORE_FD_ENV``), and this agent
serves the store on it through the ``logitsmatch-loopback`` rendezvous backend
(torch's static TCP rendezvous with that one difference). The same bound
socket means no other process can take the port between choosing and using it.
"""

from __future__ import annotations

import os
import signal
import sys

from logitsmatch.lifetime import die_with_parent
from logitsmatch.run.runfiles import LAUNCHER_PID_ENV, RENDEZVOUS_BACKEND, STORE_FD_ENV


def register_loopback_rendezvous(listen_fd: int) -> None:
    """torch's static TCP rendezvous, but its TCPStore serves on an already-bound socket."""
    import datetime

    from torch.distributed import PrefixStore, TCPStore
    from torch.distributed.elastic.rendezvous import (
        RendezvousHandler,
        RendezvousInfo,
        RendezvousParameters,
        rendezvous_handler_registry,
    )
    from torch.distributed.elastic.rendezvous.api import RendezvousStoreInfo
    from torch.distributed.elastic.rendezvous.utils import parse_rendezvous_endpoint

    class LoopbackRendezvous(RendezvousHandler):
        def __init__(self, host: str, port: int, run_id: str, timeout_s: float):
            self.host, self.port, self.run_id = host, port, run_id
            self.timeout = datetime.timedelta(seconds=timeout_s)
            self.store = None

        def get_backend(self) -> str:
            return RENDEZVOUS_BACKEND

        @property
        def use_agent_store(self) -> bool:
            return True

        def next_rendezvous(self) -> RendezvousInfo:
            if self.store is None:
                self.store = TCPStore(
                    self.host, self.port, 1, True, self.timeout, multi_tenant=True, master_listen_fd=listen_fd
                )
            return RendezvousInfo(
                PrefixStore(self.run_id, self.store), 0, 1, RendezvousStoreInfo(self.host, self.port)
            )

        def is_closed(self) -> bool:
            return False

        def set_closed(self) -> None:
            pass

        def num_nodes_waiting(self) -> int:
            return 0

        def get_run_id(self) -> str:
            return self.run_id

        def shutdown(self) -> bool:
            return True

    def create(params: RendezvousParameters) -> RendezvousHandler:
        if params.max_nodes != 1:
            raise ValueError(f"the {RENDEZVOUS_BACKEND} rendezvous serves one node only")
        host, port = parse_rendezvous_endpoint(params.endpoint, -1)
        return LoopbackRendezvous(host, port, params.run_id, float(params.config.get("timeout", 600)))

    rendezvous_handler_registry.register(RENDEZVOUS_BACKEND, create)


def main(argv: list[str]) -> None:
    """torch.distributed.run with the loopback store; SIGTERM (its ranks stopped) when the launcher dies."""
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    die_with_parent(int(launcher) if launcher else None, signal.SIGTERM)
    listen_fd = int(os.environ.pop(STORE_FD_ENV))
    register_loopback_rendezvous(listen_fd)
    from torch.distributed.run import main as torchrun_main

    torchrun_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
