"""mqttfast's asyncio client: ``mqttfast.aio.Client``, on the same sans-IO Session and codec.

- ``client``: the Client (connecting, reconnecting, publishing, the message queue).
- ``handles``: what publishes and requests return (awaitable).
- ``protocol``: the asyncio ``BufferedProtocol`` and the ``messages()`` iterator.
"""
from ..client import AckableMessage, Message
from .client import Client, GaveUp
from .handles import BatchHandle, PublishFailed, PublishHandle, RequestHandle, WrittenHandle

__all__ = ["AckableMessage", "BatchHandle", "Client", "GaveUp", "Message", "PublishFailed",
           "PublishHandle", "RequestHandle", "WrittenHandle"]
