"""The telephone keypad: the DTMF keys a caller can press, as carriers report them."""

from __future__ import annotations

# 0-9, * and #, and the A-D column of a full keypad (some carriers pass those on too).
DTMF_KEYS = frozenset("0123456789*#ABCD")
