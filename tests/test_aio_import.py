"""``import mqttfast`` stays light: the asyncio client is a submodule, loaded on first use."""
from __future__ import annotations

import subprocess
import sys


def test_import_mqttfast_does_not_import_asyncio_until_aio_is_used():
    code = ("import sys, mqttfast; assert 'asyncio' not in sys.modules, 'asyncio imported'; "
            "assert 'mqttfast.aio' not in sys.modules; "
            "from mqttfast.aio import Client; assert mqttfast.aio.Client is Client; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_mqttfast_aio_is_reachable_as_an_attribute():
    code = "import mqttfast; print(mqttfast.aio.Client.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "mqttfast.aio.client", out.stderr
