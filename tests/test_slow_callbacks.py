"""A slow callback never stalls the network (issue 9), against a real mosquitto.

Callbacks run on the thread that drives the loop. When one of them runs longer than the loop's
``stall_after`` (0.2 s), a stand-in thread drives the loop until it returns: keep-alive goes on,
acknowledgements are read and sent, other threads' publishes are written, and the reports the
handler thread has not taken yet (messages, events, closes) wait for it in order, up to
``max_backlog`` messages; past that the stand-in stops reading (TCP back-pressure, the broker
holds the rest) but still pings.
"""
from __future__ import annotations

import contextlib
import threading
import time

import pytest

import mqttfast
from client_support import QUIET_LOG, connected_client, shutdown, topic, wait_until
from mqttfast.codec import encode_publish
from mqttfast.loop import RECV_SIZE


def _blocking_subscriber(port, name, block, *, qos=1, keepalive=2, loop=None, **options):
    """A subscriber whose first on_message blocks for ``block`` s; later ones are recorded."""
    got = []
    started = threading.Event()
    ended = []

    def on_message(msg):
        if not started.is_set():
            started.set()
            time.sleep(block)
        got.append(msg.payload)

    sub = connected_client(port, keepalive=keepalive, loop=loop, **options)
    sub.on_message = on_message
    sub.on_disconnect = ended.append
    assert sub.subscribe(name, qos).wait(5)
    return sub, got, started, ended


@contextlib.contextmanager
def _inside_its_callback(broker_factory, prefix, block, **options):
    """A ``_blocking_subscriber`` on a new broker that published b"first" to itself and is now
    inside the ``block`` s on_message for it (that PUBLISH's PUBACK may come after the message);
    yields ``(sub, name, got)`` and shuts the subscriber down after."""
    instance = broker_factory(log_types=QUIET_LOG)
    name = topic(prefix)
    sub, got, started, ended = _blocking_subscriber(instance.port, name, block, **options)
    try:
        sub.publish(name, b"first", qos=1)
        assert started.wait(5)
        yield sub, name, got
    finally:
        shutdown(sub)


@pytest.mark.parametrize("protocol", [4, 5])
def test_a_callback_blocking_for_four_keepalives_keeps_the_connection(broker_factory, protocol):
    """Before: with keepalive 2 s an 8 s callback got the connection closed by the broker (no
    PINGREQ for 1.5 x keepalive). Now the stand-in pings; nothing is lost, in order."""
    instance = broker_factory(log_types=QUIET_LOG)
    name = topic("slowcb")
    sub, got, started, ended = _blocking_subscriber(instance.port, name, 8.0, protocol=protocol)
    pub = None
    try:
        pub = connected_client(instance.port, protocol=protocol)
        assert pub.publish(name, b"first", qos=1).wait(5)
        assert started.wait(5)
        handles = [pub.publish(name, b"%d" % i, qos=1) for i in range(200)]
        assert all(h.wait(5) for h in handles)  # the broker took them while the callback slept
        assert wait_until(lambda: len(got) == 201, 20), len(got)
        assert got == [b"first"] + [b"%d" % i for i in range(200)]
        assert not ended, ended
        assert sub.is_connected
        assert sub._loop.stand_ins >= 1
        assert sub.publish(name + "/after", b"x", qos=1).wait(5)  # the loop thread lives
    finally:
        shutdown(pub, sub)


def test_publishes_from_another_thread_complete_while_a_callback_blocks(broker_factory):
    with _inside_its_callback(broker_factory, "slowpub", 3.0) as (sub, name, got):
        t0 = time.monotonic()
        # The PUBACKs are read by the stand-in: these complete long before the callback returns.
        assert sub.publish(name + "/other", b"a", qos=1).wait(2)
        assert sub.publish(name + "/other", b"b", qos=2).wait(2)
        assert time.monotonic() - t0 < 2.0
        assert wait_until(lambda: not sub._loop.standing_in, 5)


def test_the_backlog_is_bounded_and_reading_pauses(broker_factory):
    """The backlog holds at most ``max_backlog`` plus what the read that filled it brought
    (``RECV_SIZE`` bytes); the messages are large enough that this bound is below their count."""
    instance = broker_factory(log_types=QUIET_LOG, max_queued_messages=0)  # the broker drops none
    name = topic("slowbacklog")
    n, pad = 1_000, b"." * 1_000
    bound = 50 + RECV_SIZE // len(encode_publish(name, b"0000" + pad, 1, 1)) + 1
    assert bound < n
    loop = mqttfast.Loop(max_backlog=50)
    sub, got, started, ended = _blocking_subscriber(instance.port, name, 4.0, loop=loop,
                                                    background=True)
    pub = None
    seen = []
    try:
        pub = connected_client(instance.port)
        assert pub.publish(name, b"first", qos=1).wait(5)
        assert started.wait(5)
        assert all(pub.publish(name, b"%04d" % i + pad, qos=1).wait(5) for i in range(n))

        def watch():
            while started.is_set() and len(got) < n + 1:
                seen.append(loop.backlog)
                time.sleep(0.01)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        assert wait_until(lambda: loop.reading_paused, 3), "reading never paused"
        assert wait_until(lambda: len(got) == n + 1, 30), len(got)
        watcher.join(5)
        assert got == [b"first"] + [b"%04d" % i + pad for i in range(n)]
        assert max(seen) <= bound, (max(seen), bound)
        assert not ended, ended
        assert not loop.reading_paused
    finally:
        shutdown(pub, sub)


def test_waiting_inside_a_stalled_callback_still_raises(broker_factory):
    """The stand-in drives the loop, but the callback still runs on the handler thread: a wait
    there would wait for reports that only that thread can take."""
    instance = broker_factory(log_types=QUIET_LOG)
    name = topic("slowwait")
    errors = []
    done = threading.Event()
    sub = connected_client(instance.port, keepalive=2)

    def on_message(msg):
        time.sleep(0.6)  # long enough for the stand-in to take over
        try:
            sub.subscribe(name + "/more", 1).wait(1)
        except mqttfast.MQTTError as exc:
            errors.append(exc)
        done.set()

    sub.on_message = on_message
    try:
        assert sub.subscribe(name, 0).wait(5)
        assert sub.publish(name, b"x", qos=1).wait(5)
        assert done.wait(5)
        assert errors and "inside a callback" in str(errors[0]), errors
        assert sub._loop.stand_ins >= 1
    finally:
        shutdown(sub)


def test_a_loop_without_stand_in_behaves_as_before(broker_factory):
    """``Loop(stall_after=None)``: callbacks block the loop, as a program that wants that
    (or runs under a framework with its own scheduling) may ask."""
    loop = mqttfast.Loop(stall_after=None)
    with _inside_its_callback(broker_factory, "nostandin", 1.5, loop=loop,
                              background=True) as (sub, name, got):
        t0 = time.monotonic()
        assert sub.publish(name + "/other", b"a", qos=1).wait(5)
        assert time.monotonic() - t0 > 1.0  # its PUBACK waited for the callback
        assert loop.stand_ins == 0


def test_the_stand_in_sleeps_while_reports_wait(broker_factory):
    """While the handler thread is stuck, the stand-in waits in select() like the loop would:
    the reports it holds do not make it spin."""
    with _inside_its_callback(broker_factory, "slowidle", 2.0) as (sub, name, got):
        sub.publish(name, b"second", qos=1)
        assert wait_until(lambda: sub._loop.backlog >= 1, 1.5)
        t0, cpu0 = time.monotonic(), time.process_time()
        time.sleep(0.5)
        assert time.process_time() - cpu0 < 0.25 * (time.monotonic() - t0)
        assert wait_until(lambda: got == [b"first", b"second"], 5), got
