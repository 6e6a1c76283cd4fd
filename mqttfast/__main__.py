"""``python -m mqttfast``: the same as the ``mqttfast`` command."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
