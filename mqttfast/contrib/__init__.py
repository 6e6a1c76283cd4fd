"""Integrations with other tools: ``mqttfast.contrib.locust`` (needs ``pip install
'mqttfast[locust]'``; importing it monkey-patches the process with gevent, as Locust does)."""
