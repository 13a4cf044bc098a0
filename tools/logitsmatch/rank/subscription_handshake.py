"""Every rank of an engine subscribed to its engine's ZMQ broadcasts before the engine loop's first turn.

megatron-core's engines (0.15 to 0.19 and main) broadcast over ZMQ PUB/SUB: the requests the coordinator sends
go from the engine's first rank to its model-parallel group once per loop turn, and on 0.16+ an expert-parallel
engine's work consensus (and on 0.19 the world's pause/stop barrier) is an all-reduce whose result its group's
first rank publishes (``AsyncZMQCommunicator``). A subscription reaches its PUB in the background, and a PUB
drops what it sends before then; the model-parallel ranks pass a barrier after connecting, which does not wait
for that, and the communicators pass none. Where a rank missed the first turn's broadcast, it waits for one its
engine's first rank never sends, because that rank waits in the expert-parallel consensus for it: a deadlock
at start-up (seen once: the TP4 x EP4 chunked-prefill suite on 0.16.1 at load ~10, "the engines of ranks [3]
received no broadcast in 300 s"; reproduced with scripts/engine_loop_repro, REPRO_STARTUP_LATE_S).

So before that first turn, for each broadcast channel in turn, the channel's first rank publishes probes until
every rank of its group has received one (a barrier of the group), then an end marker, and each rank reads up
to the marker: the first real broadcast finds every subscription live, and nothing of the handshake is left in
a socket. No engine message is sent, dropped or changed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

PROBE = b"logitsmatch:subscription-probe"
END = b"logitsmatch:subscription-end"
PROBE_INTERVAL_S = 0.01
HANDSHAKE_TIMEOUT_S = 300.0
# (publisher, subscriber) attributes of a DynamicInferenceEngine's model-parallel broadcast: the requests, and on
# 0.15/0.16 the second pair that carries their count. Only the engine's first rank has the publishers.
MODEL_PARALLEL_PAIRS = (("model_parallel_publisher_socket", "model_parallel_subscriber_socket"),
                        ("model_parallel_num_msgs_publisher_socket", "model_parallel_num_msgs_subscriber_socket"))


@dataclass(frozen=True)
class BroadcastChannel:
    """One broadcast of the engine as this rank sees it: the PUB sockets it sends on (its group's first rank
    only), the SUB sockets it reads (the other ranks), and the process group of the ranks that take part
    (None: world)."""

    name: str
    publishers: tuple
    subscribers: tuple
    group: object


def model_parallel_group(engine):
    """The engine's model-parallel group, as megatron-core passes it to its barrier after connect()."""
    group = getattr(getattr(engine, "pg_collection", None), "mp", None)
    if group is None:  # 0.15: no process-group collection on the engine
        from megatron.core import parallel_state

        group = parallel_state.get_model_parallel_group()
    return group


def engine_channels(engine) -> list[BroadcastChannel]:
    """The engine's broadcast channels, in the same order on every rank (so their barriers pair up)."""
    channels = []
    pairs = [(getattr(engine, pub, None), getattr(engine, sub)) for pub, sub in MODEL_PARALLEL_PAIRS
             if getattr(engine, sub, None) is not None]
    if pairs:
        publishers = tuple(p for p, _ in pairs if p is not None)
        # The first rank subscribes to its own broadcasts too but never reads them: nothing to wait for there.
        subscribers = () if publishers else tuple(s for _, s in pairs)
        channels.append(BroadcastChannel("model-parallel requests", publishers, subscribers,
                                         model_parallel_group(engine)))
    for attribute, group in (("expert_parallel_zmq_communicator", "ep"), ("world_zmq_communicator", None)):
        communicator = getattr(engine, attribute, None)
        if communicator is not None:
            leader = communicator.is_leader
            channels.append(BroadcastChannel(attribute, (communicator.bcast_sock,) if leader else (),
                                             () if leader else (communicator.bcast_sock,),
                                             getattr(engine.pg_collection, group) if group else None))
    return channels


def _take(subscriber, wanted: bytes, deadline: float, block: bool) -> bool:
    """Read handshake messages from ``subscriber`` until ``wanted`` (True) or, unless ``block``, until none is
    waiting (False). Anything but a probe or the end marker here is an engine message: an error, never eaten."""
    import zmq

    while True:
        timeout_ms = max(0, int((deadline - time.monotonic()) * 1000)) if block else 0
        if not subscriber.poll(timeout_ms):
            if block:
                raise RuntimeError(f"no subscription handshake message in {HANDSHAKE_TIMEOUT_S:.0f} s")
            return False
        frames = subscriber.recv_multipart(flags=zmq.NOBLOCK)
        if frames[0] == wanted:
            return True
        if frames[0] not in (PROBE, END):
            raise RuntimeError(f"an engine broadcast arrived during the subscription handshake ({frames[0][:16]!r})")


def channel_live(channel: BroadcastChannel, deadline: float) -> None:
    """Return once every rank of ``channel``'s group receives its broadcasts (every rank of the group calls
    this), with no handshake message left in this rank's sockets."""
    import torch

    stop = threading.Event()

    def publish_probes() -> None:  # the publishers belong to this thread until it is joined
        while not stop.is_set():
            for publisher in channel.publishers:
                publisher.send(PROBE)
            stop.wait(PROBE_INTERVAL_S)

    sender = threading.Thread(target=publish_probes, name=f"probes of {channel.name}", daemon=True)
    if channel.publishers:
        sender.start()
    try:
        for subscriber in channel.subscribers:
            _take(subscriber, PROBE, deadline, block=True)
        everyone = torch.distributed.barrier(group=channel.group, async_op=True)
        while not everyone.is_completed():  # keep the queues short while the slowest rank subscribes
            for subscriber in channel.subscribers:
                _take(subscriber, END, deadline, block=False)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the subscription handshake of {channel.name} did not end in "
                                   f"{HANDSHAKE_TIMEOUT_S:.0f} s")
            time.sleep(PROBE_INTERVAL_S)
        everyone.wait()
    finally:
        stop.set()
        if channel.publishers:
            sender.join()
    for publisher in channel.publishers:
        publisher.send(END)
    for subscriber in channel.subscribers:
        _take(subscriber, END, deadline, block=True)


def subscriptions_live(engine) -> None:
    """Return once every rank receives each of ``engine``'s broadcasts (every rank calls this, before its
    engine's first ``schedule_requests``)."""
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
    for channel in engine_channels(engine):
        channel_live(channel, deadline)
