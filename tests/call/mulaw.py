"""μ-law encoding for tests: the bytes a μ-law carrier should receive for some PCM.

The bridge itself encodes only through `FrameEncoder`; tests that predict what a caller hears
encode the expected PCM here, independently of it.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def pcm_to_mulaw(pcm: bytes) -> bytes:
    """PCM16LE mono to G.711 μ-law, one byte per sample."""
    return audioop.lin2ulaw(pcm, 2)
