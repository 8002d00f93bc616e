"""The server edge: the starlette application, the stream endpoint, the WebSocket protocol, the ops
routes and metrics, and the assembly of one running bridge.

One call, in order: a carrier's routes (telebridge/carriers/*_http.py) answer on the `Bridge`
(bridge.py, their `CallHost`); its stream ends in the stream endpoint (stream.py), whose
`CallSession` speaks through the carrier's WebSocket (transport.py). app.py builds the app and its
lifespan, ops.py the health routes, serving.py the uvicorn server that drains on a signal.

It imports everything below it (call, carriers, tts, flows, calllog); nothing below imports it.
"""

from telebridge.server.app import create_app
from telebridge.server.bridge import Bridge
from telebridge.server.serving import WS_MAX_MESSAGE, DrainingServer

__all__ = ["WS_MAX_MESSAGE", "Bridge", "DrainingServer", "create_app"]
