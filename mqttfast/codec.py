"""Picks the codec: the Cython ``_codec`` when it is built, else the pure-Python ``_codec_py``.

``MQTTFAST_PURE=1`` in the environment forces the pure twin. ``IMPLEMENTATION`` says which loaded.
"""
from __future__ import annotations

import os

if os.environ.get("MQTTFAST_PURE", "").lower() not in ("", "0", "false", "no"):
    from ._codec_py import *  # noqa: F403
    from ._codec_py import __all__

    IMPLEMENTATION = "python"
else:
    try:
        from ._codec import *  # type: ignore[import-not-found]  # noqa: F403
        from ._codec import __all__  # type: ignore[import-not-found]

        IMPLEMENTATION = "c"
    except ImportError:
        from ._codec_py import *  # noqa: F403
        from ._codec_py import __all__

        IMPLEMENTATION = "python"

__all__ = [*__all__, "IMPLEMENTATION"]
