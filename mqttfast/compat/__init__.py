"""Faces of other MQTT libraries on mqttfast's engine: ``mqttfast.compat.paho`` is paho-mqtt 2.x's
``Client`` (``import mqttfast.compat.paho as mqtt``)."""
