"""A publisher process for the SQLite store's crash tests (tests/test_sqlite_store.py), run as
``python tests/durable_publisher.py PORT STORE CLIENT_ID QOS START COUNT [BATCH] [FINISH]``.

It opens the store, connects with ``clean_session=False`` and publishes the numbered payloads
START..COUNT-1 to ``durable/<client id>`` (one ``publish()`` each, or ``publish_many`` batches of
BATCH), printing ``R <last index>`` on stdout after each call *returned*: what the parent may
count as durable when it ``kill -9``s this process. It first prints ``RESTORED <n>``: the
publishes the store brought back. With FINISH=1 it then waits until every handle (restored ones
included) has completed, prints ``DONE <restored ok> <on_publish calls for restored> <rows>``
and disconnects, keeping the session.
"""
from __future__ import annotations

import sys
import threading

import mqttfast


def main(argv: list) -> int:
    port, store_path, client_id = int(argv[0]), argv[1], argv[2]
    qos, start, count = int(argv[3]), int(argv[4]), int(argv[5])
    batch = int(argv[6]) if len(argv) > 6 else 1
    finish = len(argv) > 7 and argv[7] == "1"
    out = sys.stdout
    store = mqttfast.SQLiteStore(store_path)
    client = mqttfast.Client(client_id, clean_session=False, store=store, max_inflight=100)
    restored = list(client.restored)
    restored_ids = {id(h) for h in restored}
    reported = []
    lock = threading.Lock()

    def on_publish(handle: object) -> None:
        if id(handle) in restored_ids:
            with lock:
                reported.append(handle)

    client.on_publish = on_publish
    out.write(f"RESTORED {len(restored)}\n")
    out.flush()
    client.connect("127.0.0.1", port)
    topic = f"durable/{client_id}"
    handles = []
    i = start
    while i < count:
        n = min(batch, count - i)
        if batch == 1:
            handles.append(client.publish(topic, str(i).encode(), qos))
        else:
            handles.extend(client.publish_many(
                topic, [str(j).encode() for j in range(i, i + n)], qos).handles)
        i += n
        out.write(f"R {i - 1}\n")
        out.flush()
    if not finish:
        return 0
    ok = all(h.wait(30) for h in handles)
    restored_ok = sum(1 for h in restored if h.wait(30))
    client.disconnect()
    with lock:
        calls = len(reported)
    rows = len(store.outgoing) + len(store.pending)
    store.close()
    out.write(f"DONE {restored_ok} {calls} {rows} {int(ok)}\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
