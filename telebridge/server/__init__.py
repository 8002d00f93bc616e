"""The server edge: the starlette application, the stream endpoint, the WebSocket protocol, the ops
routes and metrics, and the assembly of one running bridge.

It imports everything below it (call, carriers, tts, flows, calllog); nothing below imports it.
"""

from telebridge.server.app import WS_MAX_MESSAGE, Bridge, DrainingServer, create_app

__all__ = ["WS_MAX_MESSAGE", "Bridge", "DrainingServer", "create_app"]
