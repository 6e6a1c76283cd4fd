"""``mqttfast bench``: an MQTT broker load generator (connections, publishers, subscribers).

All the clients of a process share one ``mqttfast.loop.Loop`` in one thread (``runner``);
``--workers N`` runs N such processes and merges their results (``workers``, ``stats``). The
command line lives in ``cli`` (``main(argv) -> int``); ``python -m mqttfast.bench pub ...`` runs it.
hdrhistogram (a dependency of mqttfast) is needed at run time, matplotlib (``mqttfast[plot]``) for
``--plot``.
"""
from __future__ import annotations

from .cli import main

__all__ = ["main"]
