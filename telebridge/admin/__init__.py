"""Administration of a bridge: pointing the carriers' webhooks at it (`configure`), checking what
it depends on (`doctor`) and making its fixed prompts ahead of calls (`prompts`).

May import: `telebridge.carriers` (REST clients and paths), `telebridge.call` (`speech_for`: a
call's speech options), `telebridge.tts`, `telebridge.flows`, `telebridge.calllog` (the doctor
reaching a PostgreSQL call log) and the root modules. Used by the CLI only.
"""
