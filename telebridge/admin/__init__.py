"""Administration of a bridge: pointing the carriers' webhooks at it (`configure`) and checking
what it depends on (`doctor`).

May import: `telebridge.carriers` (REST clients and paths), `telebridge.tts`, `telebridge.flows`
and the root modules. Used by the CLI only.
"""
