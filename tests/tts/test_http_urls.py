"""The HTTP URLs of Waves derived from WAVES_URL."""

from __future__ import annotations

import pytest

from telebridge.tts.http_urls import sse_url, sync_url, voices_url


@pytest.mark.parametrize(
    ("ws_url", "origin"),
    [
        ("wss://api.smallest.ai/waves/v1/tts/live", "https://api.smallest.ai"),
        ("ws://127.0.0.1:8765/waves/v1/tts/live", "http://127.0.0.1:8765"),
        ("wss://waves.example:8443/some/other/path", "https://waves.example:8443"),
        ("WSS://API.smallest.ai/waves/v1/tts/live", "https://API.smallest.ai"),
        ("ws://[::1]:9000/waves/v1/tts/live", "http://[::1]:9000"),
        ("https://api.smallest.ai/waves/v1/tts/live", "https://api.smallest.ai"),
        ("http://localhost:81", "http://localhost:81"),
        (" wss://api.smallest.ai/waves/v1/tts/live\n", "https://api.smallest.ai"),
    ],
)
def test_same_host_and_port_fixed_paths(ws_url: str, origin: str) -> None:
    assert sse_url(ws_url) == origin + "/waves/v1/tts/live"
    assert sync_url(ws_url) == origin + "/waves/v1/tts"
    assert voices_url(ws_url) == origin + "/waves/v1/lightning-v3.1/get_voices"


def test_query_and_user_info_are_dropped() -> None:
    url = "wss://user:sk_secret_value@api.smallest.ai:443/waves/v1/tts/live?timeout=30#x"
    assert sse_url(url) == "https://api.smallest.ai:443/waves/v1/tts/live"
    assert sync_url(url) == "https://api.smallest.ai:443/waves/v1/tts"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("ftp://api.smallest.ai/?key=sk_secret_value", "WAVES_URL must start with wss:// or ws://"),
        ("api.smallest.ai/waves/v1/tts/live", "WAVES_URL must start with wss:// or ws://"),
        ("", "WAVES_URL must start with wss:// or ws://"),
        ("wss:///waves/v1/tts/live?key=sk_secret_value", "WAVES_URL has no host"),
        ("wss://user@/waves/v1/tts/live", "WAVES_URL has no host"),
    ],
)
def test_bad_urls_are_refused_without_quoting_them(bad: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        sse_url(bad)
    assert str(caught.value) == message
