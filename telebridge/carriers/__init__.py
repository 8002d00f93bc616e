"""Carriers: one folder room per carrier protocol and its edges.

- `plivo.py`, `vonage.py`: sans-I/O stream protocols (carrier messages <-> neutral call events);
- `plivo_http.py`, `vonage_http.py`: the carrier's webhooks and stream route, on a `CallHost`;
- `plivo_rest.py`, `vonage_rest.py`: the carriers' REST APIs (hangup, transfer, placing calls);
- `host.py`, `webhooks.py`, `paths.py`: what the routes need of the server, and share.

May import: `telebridge.call` (events, audio, ports), `telebridge.flows`, and the root modules
(settings, tokens, e164, dtmf, logs). Never `telebridge.server`.
"""
