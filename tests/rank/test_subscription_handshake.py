"""Before an engine's first loop turn every rank receives its broadcasts (rank.subscription_handshake): a slow
joiner's subscription is waited for, and nothing of the handshake is left in a socket."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from support.gloo_ranks import in_gloo_group

zmq = pytest.importorskip("zmq")
torch = pytest.importorskip("torch")

from logitsmatch.rank import subscription_handshake as handshake  # noqa: E402

SLOW_JOINER = 2
LATE_S = 0.5


def _first_broadcast_after_handshake(rank: int, world: int) -> list[bytes]:
    """Rank 0 publishes, the others subscribe, the last one LATE_S late; right after the handshake rank 0
    sends one message. What each subscriber then reads in 5 s, in order."""
    import torch.distributed as dist

    context = zmq.Context()
    publisher = subscriber = None
    if rank == 0:
        publisher = context.socket(zmq.PUB)
        port = publisher.bind_to_random_port("tcp://127.0.0.1")
        address = [f"tcp://127.0.0.1:{port}"]
    else:
        address = [None]
    dist.broadcast_object_list(address, src=0)
    if rank == SLOW_JOINER:
        time.sleep(LATE_S)  # without the handshake, rank 0's message leaves before this rank subscribes
    if rank != 0:
        subscriber = context.socket(zmq.SUB)
        subscriber.connect(address[0])
        subscriber.setsockopt_string(zmq.SUBSCRIBE, "")
    channel = handshake.BroadcastChannel("test", (publisher,) if publisher else (),
                                         (subscriber,) if subscriber else (), None)
    handshake.channel_live(channel, time.monotonic() + 60)
    received = []
    if publisher is not None:
        publisher.send(b"first")
    else:
        while subscriber.poll(5000 if not received else 200):
            received.append(subscriber.recv())
    dist.barrier()
    context.destroy(linger=0)
    return received


def test_every_subscriber_reads_the_first_broadcast_and_only_it():
    assert in_gloo_group(3, _first_broadcast_after_handshake) == [[], [b"first"], [b"first"]]


def test_an_engine_message_during_the_handshake_is_an_error_not_eaten():
    context = zmq.Context()
    publisher, subscriber = context.socket(zmq.PUB), context.socket(zmq.SUB)
    publisher.bind("inproc://engine")
    subscriber.connect("inproc://engine")
    subscriber.setsockopt_string(zmq.SUBSCRIBE, "")
    time.sleep(0.1)
    publisher.send(b"a request")
    with pytest.raises(RuntimeError, match="engine broadcast arrived during the subscription handshake"):
        handshake._take(subscriber, handshake.PROBE, time.monotonic() + 5, block=True)
    context.destroy(linger=0)


def _engine(first_rank: bool, counts: bool, communicators: bool):
    """Shaped as a DynamicInferenceEngine where the handshake reads it: sockets are stand-in strings."""
    engine = SimpleNamespace(pg_collection=SimpleNamespace(mp="mp group", ep="ep group"),
                             model_parallel_subscriber_socket="requests SUB")
    if first_rank:
        engine.model_parallel_publisher_socket = "requests PUB"
    if counts:  # 0.15/0.16: the count of each broadcast goes on a second pair
        engine.model_parallel_num_msgs_subscriber_socket = "counts SUB"
        if first_rank:
            engine.model_parallel_num_msgs_publisher_socket = "counts PUB"
    if communicators:
        engine.expert_parallel_zmq_communicator = SimpleNamespace(is_leader=first_rank, bcast_sock="ep socket")
        engine.world_zmq_communicator = SimpleNamespace(is_leader=not first_rank, bcast_sock="world socket")
    return engine


def test_channels_name_each_broadcast_in_one_order_with_this_ranks_side_of_it():
    first = handshake.engine_channels(_engine(first_rank=True, counts=True, communicators=True))
    other = handshake.engine_channels(_engine(first_rank=False, counts=True, communicators=True))
    assert [c.name for c in first] == [c.name for c in other] == [
        "model-parallel requests", "expert_parallel_zmq_communicator", "world_zmq_communicator"]
    assert [c.group for c in first] == ["mp group", "ep group", None]
    assert first[0].publishers == ("requests PUB", "counts PUB")
    assert other[0].subscribers == ("requests SUB", "counts SUB")
    assert first[0].subscribers == other[0].publishers == ()  # the first rank never reads its own broadcasts
    assert (first[1].publishers, first[1].subscribers) == (("ep socket",), ())
    assert (other[1].publishers, other[1].subscribers) == ((), ("ep socket",))
    assert (first[2].publishers, first[2].subscribers) == ((), ("world socket",))


def test_a_release_without_the_count_pair_or_communicators_has_one_channel():
    (channel,) = handshake.engine_channels(_engine(first_rank=True, counts=False, communicators=False))
    assert (channel.publishers, channel.subscribers) == (("requests PUB",), ())


def test_an_engine_without_sockets_has_no_channel():
    """The offline driver's direct mode: no coordinator, no broadcast, nothing to wait for."""
    assert handshake.engine_channels(SimpleNamespace()) == []
