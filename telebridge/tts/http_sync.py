"""`WavesHttpClient`: whole prompts from Waves over HTTP sync (`POST /waves/v1/tts`), for
rendering fixed prompts ahead of calls (`telebridge prompts render`).

The answer is the raw PCM16LE of the whole prompt (`output_format: pcm`, no header), returned
exactly as sent, odd length too. An answer cut short (shorter than its Content-Length, or a chunked
body that never ended) is `WavesTruncated`, never audio: a rendered prompt is cached for good.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx

from telebridge.tts.errors import (
    WavesConnectionError,
    WavesServerError,
    WavesTimeout,
    WavesTruncated,
)
from telebridge.tts.http_errors import (
    connection_error,
    describe_body,
    read_error_body,
    status_error,
)
from telebridge.tts.http_urls import sync_url
from telebridge.tts.speech import SpeechOptions
from telebridge.tts.wire import check_request_id, request_json

__all__ = ["MAX_AUDIO_BYTES", "WavesHttpClient"]

logger = logging.getLogger("telebridge.tts.http")

# About 12 minutes of 44.1 kHz audio: far more than any prompt, and a bound on a broken server.
MAX_AUDIO_BYTES = 64 * 1024 * 1024
# Answers that are text, not audio, even with status 200: never to be cached as sound.
_TEXT_TYPES = ("application/json", "text/")


class WavesHttpClient:
    """Renders whole prompts through Waves' HTTP sync endpoint, on keep-alive connections."""

    def __init__(
        self, url: str, api_key: str, *, timeout: float = 30.0, max_connections: int = 4
    ) -> None:
        self._url = sync_url(url)
        self._api_key = api_key
        self._timeout = timeout
        self._closed = False
        self._headers = {"Authorization": f"Bearer {api_key}"}
        # `timeout` bounds each step: connecting, sending, and every wait for more of the answer.
        self._http = httpx.AsyncClient(
            http1=True,
            http2=False,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=30.0,
            ),
            timeout=httpx.Timeout(timeout),
        )

    async def __aenter__(self) -> WavesHttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def render(
        self,
        text: str,
        *,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None = None,
    ) -> bytes:
        """The PCM16LE of `text` at `sample_rate`, whole; blank text gives b"" without a request."""
        if self._closed:
            raise WavesConnectionError("this WavesHttpClient is closed")
        rid = check_request_id(request_id)
        if not text.strip():
            return b""
        body: dict[str, Any] = json.loads(
            request_json(text, sample_rate=sample_rate, options=options, rid=rid)
        )
        body["output_format"] = "pcm"
        started = asyncio.get_running_loop().time()
        answered = False
        try:
            async with self._http.stream(
                "POST", self._url, json=body, headers=self._headers
            ) as response:
                answered = True
                if response.status_code != 200:
                    error_body = await read_error_body(response)
                    raise status_error(
                        response.status_code, response.headers, error_body, secret=self._api_key
                    )
                kind = response.headers.get("Content-Type", "").lower()
                if kind.startswith(_TEXT_TYPES):
                    detail = describe_body(await read_error_body(response), secret=self._api_key)
                    kind = kind.split(";")[0].strip()
                    raise WavesServerError(f"Waves answered {kind} instead of audio: {detail}")
                audio = await self._read(response)
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise connection_error(exc, self._url) from None
            raise WavesTimeout(f"no answer from Waves within {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            if not answered:
                raise connection_error(exc, self._url) from None
            logger.debug("waves http %s: body broke off (%s)", rid, type(exc).__name__)
            raise WavesTruncated(
                "Waves closed the connection before the audio was complete"
            ) from None
        elapsed = (asyncio.get_running_loop().time() - started) * 1000
        logger.debug("waves http %s: %d bytes, %.0f ms", rid, len(audio), elapsed)
        return audio

    @staticmethod
    async def _read(response: httpx.Response) -> bytes:
        audio = bytearray()
        async for piece in response.aiter_bytes():
            audio += piece
            if len(audio) > MAX_AUDIO_BYTES:
                raise WavesServerError(f"Waves sent more than {MAX_AUDIO_BYTES} bytes of audio")
        return bytes(audio)

    async def aclose(self) -> None:
        """Close every connection. The client cannot be used afterwards."""
        self._closed = True
        await self._http.aclose()
