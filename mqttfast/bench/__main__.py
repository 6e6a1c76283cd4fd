"""``python -m mqttfast.bench conn|pub|sub ...``."""
import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
