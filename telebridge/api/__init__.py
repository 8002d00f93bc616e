"""The call API (`/v1/`): HTTP routes for applications outside the call, which place calls, list
them, and speak on, hang up or transfer live ones.

The routes (`routes.py`) check the key (`auth.py`), the rate and the body (`bodies.py`), and
then act through a `CallDesk` (`desk.py`), which the server implements. This folder imports
the root modules and `outbound.request` (the checks every outbound call gets), nothing of the
server, the call core or the carriers.
"""
