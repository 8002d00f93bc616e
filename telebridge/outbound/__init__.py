"""Outbound calls: placing one call through a carrier's REST API (`placing`), and campaigns of
many, paced and resumable (`campaign`).

May import: `telebridge.carriers` (REST clients and paths), `telebridge.calllog`, `telebridge.flows`
and the root modules. Used by the CLI; never by the server or the call core.
"""
