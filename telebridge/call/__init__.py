"""The call core: one call's session and the sans-I/O parts it drives.

`events` (the neutral vocabulary of a call), `ports` (what a call needs from a carrier and its
socket), `audio` (Waves PCM -> carrier frames), `pacer` (when frames go out) and `session` (one
carrier stream, one TTS stream and one flow wired together).

May import: `telebridge.flows`, `telebridge.tts` and the root modules. Never a carrier, the server,
the call log or the CLI: those import the core.
"""
