"""The bridge's carrier-facing paths: where each carrier's webhooks and media streams arrive.

One spelling for the routes, the answers that point carriers at them, the outbound placers, the
set-up of the carriers' applications and the simulator.
"""

from __future__ import annotations

PLIVO_ANSWER = "/plivo/answer"
PLIVO_HANGUP = "/plivo/hangup"
PLIVO_STREAM_STATUS = "/plivo/stream-status"
PLIVO_TRANSFER = "/plivo/transfer"
PLIVO_STREAM = "/plivo/stream"

VONAGE_ANSWER = "/vonage/answer"
VONAGE_EVENT = "/vonage/event"
VONAGE_STREAM = "/vonage/stream"

# The browser phone of the web console (a local carrier): where it creates a call, and its stream.
BROWSER_CALLS = "/console/api/phone/calls"
BROWSER_STREAM = "/console/phone/stream"
