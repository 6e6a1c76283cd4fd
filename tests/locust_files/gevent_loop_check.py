"""Run by tests/test_locust.py: under gevent's monkey-patching, 50 clients on the shared loop
publish and receive while a ticker greenlet keeps ticking (the loop yields to the hub)."""
from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from greenlet import greenlet  # noqa: E402

from mqttfast import Client  # noqa: E402
from mqttfast.contrib.locust import shared_loop  # noqa: E402

port = int(sys.argv[1])
ticks = []


def ticker() -> None:
    while True:
        ticks.append(time.monotonic())
        gevent.sleep(0.01)


gevent.spawn(ticker)
loop = shared_loop()
received = []
clients = []
for i in range(50):
    c = Client(f"gevent-{i}", loop=loop)
    c.on_message = received.append
    c.connect("127.0.0.1", port)
    c.subscribe(f"gevent/{i}", 1).wait(5)
    clients.append(c)


def user(c: Client, i: int) -> None:
    for n in range(20):
        assert c.publish(f"gevent/{i}", b"%d" % n, qos=1).wait(5)


start = time.monotonic()
greenlets = [gevent.spawn(user, c, i) for i, c in enumerate(clients)]
gevent.joinall(greenlets, timeout=30, raise_error=True)
deadline = time.monotonic() + 5
while len(received) < 1000 and time.monotonic() < deadline:
    gevent.sleep(0.01)
elapsed = time.monotonic() - start
during = [t for t in ticks if t >= start]
gaps = [b - a for a, b in zip(during, during[1:], strict=False)]
# Under patching, thread idents are greenlet ids: the loop's driver must be one.
greenlet_ids = {id(g) for g in gc.get_objects() if isinstance(g, greenlet)}
print(f"received={len(received)} greenlet={int(loop.owner_id in greenlet_ids)} ticks={len(during)} "
      f"max_gap={max(gaps) if gaps else -1:.3f} elapsed={elapsed:.3f}")
for c in clients:
    c.disconnect()
