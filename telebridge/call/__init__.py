"""The call core: one call's session and the sans-I/O parts it drives.

`events` (the neutral vocabulary of a call), `ports` (what a call needs from a carrier and its
socket), `audio` (Waves PCM -> carrier frames), `pacer` (when frames go out), `state` (a call's
lifecycle), `keys` (the caller's key presses and barge-in), `playout` (the sender: queued frames
and marks to the carrier), `speaker` (speech with its retry policy, audio files, silence) and
`session` (one carrier stream, one TTS stream and one flow wired together; `outside`, what the
call API does to it), and the agent step: `agent` (the application's socket joined to the call),
`agent_wire` (its message protocol) and `text_flush` (where streamed text is cut for Waves).

May import: `telebridge.flows`, `telebridge.tts` and the root modules. Never a carrier, the server,
the call log or the CLI: those import the core.
"""
