"""Fault injection against a real, persistent mosquitto (issue 9): nothing lost, nothing stuck.

- Through ``tests/fault_proxy.py`` (drop, delay, stall, truncate mid-packet, reset, at seeded
  random points of the byte stream), a publisher with ``reconnect=True`` and a persistent session
  sends numbered QoS 1 / QoS 2 messages to a persistent subscriber connected straight to the
  broker: every QoS 1 payload arrives at least once, every QoS 2 payload exactly once, every handle
  is done and succeeded soon after the faults stop, and the loop thread still works.
- Recovery: the broker is SIGKILLed mid-stream and restarted after a seeded pause, twice; after it
  is back, every handle settles within 5 s (the issue saw 27-45 s).

Each test prints a one-line tally (``pytest -s``) that the README's Reliability table quotes.
Every wait is bounded and every random choice seeded; loopback only.
"""
from __future__ import annotations

import collections
import random
import time
from typing import Any, Dict, List

import pytest

import mqttfast
from mqttfast.events import PublishState
from client_support import QUIET_LOG, Inbox, shutdown, uid, wait_until
from fault_proxy import KINDS, FaultProxy

SEED = 20261202
WAIT_PUBCOMP = PublishState.WAIT_PUBCOMP


def persistent_broker(broker_factory: Any) -> Any:
    """Persistence on, nothing dropped from a session's queue or in-flight window, and a save
    after every change (so little is lost by the broker itself when it is killed)."""
    return broker_factory(persistence=True, max_queued_messages=0, max_inflight_messages=0,
                          log_types=QUIET_LOG,
                          extra_config=["autosave_on_changes true", "autosave_interval 1"])


def subscriber(port: int, name: str, qos: int, inbox: Inbox) -> mqttfast.Client:
    sub = mqttfast.Client(uid("sub"), clean_session=False, reconnect=True)
    sub.on_message = inbox
    sub.connect("127.0.0.1", port, keepalive=5, timeout=10)
    assert sub.subscribe(name, qos).wait(5)
    return sub


def tally(label: str, count: int, inbox: Inbox) -> Dict[str, int]:
    seen = collections.Counter(inbox.payloads)
    expected = {b"%07d" % i for i in range(count)}
    result = {"sent": count, "lost": len(expected - set(seen)),
              "duplicates": sum(n - 1 for n in seen.values()),
              "foreign": len(set(seen) - expected)}
    print(f"\n{label}: {result}")
    return result


def publish_paced(client: mqttfast.Client, name: str, qos: int, count: int, batch: int,
                  pause: float, start: int = 0) -> List[Any]:
    handles = []
    for first in range(start, start + count, batch):
        for i in range(first, min(first + batch, start + count)):
            handles.append(client.publish(name, b"%07d" % i, qos=qos))
        time.sleep(pause)
    return handles


@pytest.mark.parametrize("qos", [1, 2])
def test_faults_through_the_proxy_lose_nothing_and_leave_nothing_stuck(broker_factory, qos):
    count = 3000
    instance = persistent_broker(broker_factory)
    name = f"faults/{uid('q')}"
    inbox = Inbox()
    sub = pub = None
    proxy = FaultProxy(instance.port, seed=SEED + qos, mean_bytes=8_000, stall_seconds=2.5)
    proxy.faults_enabled = False  # connect first; faults from the first publish on
    try:
        sub = subscriber(instance.port, name, qos, inbox)
        pub = mqttfast.Client(uid("pub"), clean_session=False, reconnect=True)
        pub.connect("127.0.0.1", proxy.port, keepalive=1, timeout=10)
        proxy.faults_enabled = True
        started = time.monotonic()
        handles = publish_paced(pub, name, qos, count, batch=25, pause=0.04)
        # Keep faulting until the last publish has been through a few of them.
        wait_until(lambda: all(h.done for h in handles), 3)
        proxy.stop_faults()
        faults = proxy.counts()
        stuck_at = time.monotonic()
        settled = wait_until(lambda: all(h.done for h in handles), 20)
        settle = time.monotonic() - stuck_at
        assert settled, (f"{sum(not h.done for h in handles)} handles not done 20 s after the "
                         f"faults stopped ({faults}); first: "
                         f"{next(h for h in handles if not h.done)!r}")
        failed = [h for h in handles if not h.ok]
        assert not failed, f"{len(failed)} publishes failed, first {failed[0]!r}"
        assert inbox.wait_for(count, 20), f"{len(inbox)} of {count} arrived"
        time.sleep(0.5)  # room for a late duplicate
        result = tally(f"proxy qos={qos} faults={faults} settled {settle:.1f} s after the "
                       f"faults stopped, run {time.monotonic() - started:.1f} s", count, inbox)
        assert result["lost"] == 0 and result["foreign"] == 0, result
        if qos == 2:
            assert result["duplicates"] == 0, result
        # Every kind struck at least once (otherwise this run did not test what it says).
        assert all(faults[kind] for kind in KINDS), faults
        # The loop thread survived all of it: a new publish goes through.
        assert pub.publish(name, b"after", qos=qos).wait(10)
    finally:
        shutdown(pub, sub)
        proxy.close()


@pytest.mark.parametrize("qos", [1, 2])
def test_every_handle_settles_within_5_s_of_the_broker_coming_back(broker_factory, qos):
    """The broker is SIGKILLed in the middle of a stream of publishes and restarted after a
    seeded pause of 6-12 s, twice. The default ``reconnect=True`` policy must bring the client
    back soon enough that every handle is done (and succeeded) within 5 s of the restart."""
    rng = random.Random(SEED * 10 + qos)
    instance = persistent_broker(broker_factory)
    name = f"recovery/{uid('q')}"
    inbox = Inbox()
    sub = pub = None
    try:
        sub = subscriber(instance.port, name, qos, inbox)
        instance.restart()  # SIGTERM saves the subscription: the kills below cannot lose it
        pub = mqttfast.Client(uid("pub"), clean_session=False, reconnect=True)
        pub.connect("127.0.0.1", instance.port, keepalive=5, timeout=10)
        handles: List[Any] = []
        recoveries = []
        owed: set = set()
        for round_ in range(2):
            start = len(handles)
            handles += publish_paced(pub, name, qos, 500, batch=50, pause=0.01, start=start)
            instance.kill()
            # Once the client has seen the end of the stream it has read every acknowledgement
            # the broker sent: what is not done now, the broker never acknowledged, and it is
            # the client's job to deliver it.
            assert wait_until(lambda: not pub.is_connected, 5)
            # (QoS 2 past PUBREC is excepted: the broker had it, and loses it with its database.)
            owed.update(h.payload for h in handles if not h.done and h.state < WAIT_PUBCOMP)
            # Publishes while the broker is down queue up (or sit in flight unacknowledged).
            handles += publish_paced(pub, name, qos, 500, batch=50, pause=0.01,
                                     start=start + 500)
            down = rng.uniform(6.0, 12.0)
            time.sleep(down)
            instance.start()
            back = time.monotonic()
            settled = wait_until(lambda hs=handles: all(h.done for h in hs), 5.0)
            recoveries.append(round(time.monotonic() - back, 2))
            assert settled, (
                f"round {round_}: {sum(not h.done for h in handles)} of {len(handles)} handles "
                f"not done 5 s after the broker came back (down {down:.1f} s)")
            assert all(h.ok for h in handles)
            owed.update(h.payload for h in handles[start + 500:])
        inbox.wait_for(len(handles), 10)  # fewer may come: see below
        time.sleep(0.5)
        result = tally(f"sigkill+restart x2 qos={qos} recovery {recoveries} s "
                       f"owed by the client {len(owed)}", len(handles), inbox)
        # What the broker acknowledged before a kill may die with its unsaved database (the
        # broker's loss); what it never acknowledged must arrive (the client's part).
        missing = owed - set(inbox.payloads)
        assert not missing, f"{len(missing)} never-acknowledged messages lost: {sorted(missing)[:5]}"
        assert result["foreign"] == 0, result
        # No assertion on QoS 2 duplicates here: a killed broker that lost the publisher's session
        # answers Session Present 0, and the client must then send again as new what the broker
        # may already have delivered (broker-caused; the proxy test shows exactly once).
    finally:
        shutdown(pub, sub)
