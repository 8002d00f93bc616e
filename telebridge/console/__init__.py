"""The web console at /console: who may use it and its login page (`gate`), the live calls as
they change (`feed`), flows as drawings (`graph`), its routes (`routes`, with a call's timeline)
and its pages (`static/`: plain HTML, CSS and JavaScript modules, no build step).

It imports api (the keys, the call desk, its bodies and errors), calllog, flows and the root;
the server wires it.
"""

from telebridge.console.feed import LiveFeed
from telebridge.console.gate import ConsoleGate, Gate
from telebridge.console.routes import console_routes

__all__ = ["ConsoleGate", "Gate", "LiveFeed", "console_routes"]
