"""The contenders of ``bench_clients.py``, each run in its own interpreter.

``python -m clients.child SPEC_JSON`` (with ``benchmarks/`` and the repository on ``PYTHONPATH``)
runs one role of one client and talks to the parent in JSON lines on stdout (``ready``, then
``result`` or ``error``); the parent answers ``go`` / ``stop`` on stdin. See ``child.py``.

Modules: ``wire`` (hand-encoded MQTT 3.1.1 frames and the raw-socket roles: the QoS 0 and QoS 1
ceilings, the feeder, the confirming subscriber), ``run_mqttfast``, ``run_paho``, ``run_gmqtt``
(one ``publish(spec, ctl)`` and one ``receive(spec, ctl)`` each).
"""
