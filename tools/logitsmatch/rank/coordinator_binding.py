"""Where megatron-core's ZMQ sockets bind, for releases that do not take an address.

0.15 hard-codes its coordinator's ``tcp://0.0.0.0`` and machine-wide ``ipc:///tmp`` names, 0.16
binds to ``socket.gethostname()``; the adapters hand those modules the proxies here. The
coordinator runs in a process spawned from scratch (forked on CPU, see cpu_standins), so
``wrap_coordinator_entrypoint`` carries the binding (and the tie to rank 0's life) into it.
"""

from __future__ import annotations

import signal
import socket as _socket


class LoopbackSocketModule:
    """A ``socket`` module whose gethostname() names the bind host we chose.

    megatron-core 0.16 binds the engine PUB sockets and the coordinator ROUTER
    to ``socket.gethostname()``; handing those modules this proxy makes them
    bind where the user asked (127.0.0.1 by default).
    """

    def __init__(self, bind_host: str):
        self._bind_host = bind_host

    def gethostname(self) -> str:
        return self._bind_host

    def __getattr__(self, name):
        return getattr(_socket, name)


class AddressRewritingZmq:
    """A ``zmq`` module whose sockets rewrite bind/connect address prefixes.

    megatron-core 0.15 hard-codes two addresses: the coordinator binds
    ``tcp://0.0.0.0:{port}`` and the engines broadcast over
    ``ipc:///tmp/tp-coord-{dp}-tp-bcast-socket-*``, shared by every run on the
    machine. Handing a module this proxy moves those without touching its code.
    """

    def __init__(self, rewrites: dict[str, str]):
        import zmq

        class Socket(zmq.Socket):
            def bind(self, addr, *args, **kwargs):
                return super().bind(_rewrite(addr), *args, **kwargs)

            def connect(self, addr, *args, **kwargs):
                return super().connect(_rewrite(addr), *args, **kwargs)

        class Context(zmq.Context):
            _socket_class = Socket

        def _rewrite(addr: str) -> str:
            for old, new in rewrites.items():
                if addr.startswith(old):
                    return new + addr[len(old) :]
            return addr

        self._zmq = zmq
        self.Context = Context

    def __getattr__(self, name):
        return getattr(self._zmq, name)


def bind_coordinator_by_hostname(coordinator_module, bind_host: str) -> None:
    coordinator_module.socket = LoopbackSocketModule(bind_host)


def bind_coordinator_by_address(coordinator_module, bind_host: str) -> None:
    coordinator_module.zmq = AddressRewritingZmq({"tcp://0.0.0.0:": f"tcp://{bind_host}:"})


class _CoordinatorEntrypoint:
    """Picklable stand-in for ``DataParallelInferenceCoordinator.entrypoint``.

    The coordinator runs in a process spawned from scratch, where our patches
    to the parent's modules do not exist. Unpickling this object (before the
    coordinator's arguments, whose classes import megatron-core) makes the
    process die with rank 0 (``PR_SET_PDEATHSIG``: no orphan coordinator),
    installs the torch stand-ins there when the parent has them (0.15 compiles
    a CUDA extension at import), then ``bind`` (a module-level function, so it
    pickles; None on releases that take ``hostname=``) re-applies the socket
    binding before the real entrypoint runs.
    """

    def __init__(self, original, bind, bind_host: str):
        from logitsmatch.rank import cpu_standins

        self.original, self.bind, self.bind_host = original, bind, bind_host
        self.standins = cpu_standins.torch_standins_installed()

    def __getstate__(self):
        # Not the original: unpickling it would import megatron-core before the stand-ins.
        return {"bind": self.bind, "bind_host": self.bind_host, "standins": self.standins}

    def __setstate__(self, state):
        # This runs in the coordinator process, before anything else of it: it ends with rank 0.
        from logitsmatch.lifetime import die_with_parent

        die_with_parent(sig=signal.SIGKILL)
        self.__dict__.update(state)
        if self.standins:
            from logitsmatch.rank import cpu_standins

            cpu_standins.install_torch_standins()
        from megatron.core.inference import data_parallel_inference_coordinator as coordinator_module

        self.original = coordinator_module.DataParallelInferenceCoordinator.entrypoint  # unpatched here

    def __call__(self, *args, **kwargs):
        # A forked coordinator (the CPU stand-in for 'spawn', cpu_standins) was never unpickled: tie it here.
        from logitsmatch.lifetime import die_with_parent

        die_with_parent(sig=signal.SIGKILL)
        from megatron.core.inference import data_parallel_inference_coordinator as coordinator_module

        if self.bind is not None:
            self.bind(coordinator_module, self.bind_host)
        return self.original(*args, **kwargs)


def wrap_coordinator_entrypoint(bind, bind_host: str) -> None:
    """Route megatron-core's coordinator process through ``_CoordinatorEntrypoint``."""
    from megatron.core.inference import data_parallel_inference_coordinator as coordinator_module

    coordinator_class = coordinator_module.DataParallelInferenceCoordinator
    coordinator_class.entrypoint = _CoordinatorEntrypoint(coordinator_class.entrypoint, bind, bind_host)
