"""The prompt cache's folder: one file a prompt, so fixed prompts survive a restart.

A file is named by the SHA-256 of its cache key and holds a header that repeats the whole key, the
audio's length and CRC-32, then the raw PCM16LE. A file whose header does not match exactly (a hash
collision, another version's format, a truncated or damaged file) is a miss and is deleted. The
folder is kept under a size bound by deleting the least recently played files (mtime, touched on
every hit). Everything here blocks: `PromptCache` calls it through `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import struct
import tempfile
import time
import zlib
from pathlib import Path

logger = logging.getLogger(__name__)

# text, voice, model, speed, language, sample rate: everything that shapes the audio.
Key = tuple[str, str, str, float, str, int]

MAGIC = b"TBPROMPT"
VERSION = 1
# magic, format version, key length, PCM length, CRC-32 of the PCM
_HEADER = struct.Struct(">8sHIQI")
_NAME = re.compile(r"[0-9a-f]{64}\.pcm")
# A temporary file is ours while a write is under way; one this old was left by a crash.
STALE_TEMP_SECONDS = 3600.0


class BadFile(ValueError):
    """A cache file that cannot be trusted for the key it was looked up by."""


def encode_key(key: Key) -> bytes:
    """The key's canonical bytes: the same key always gives the same bytes (and file name)."""
    return json.dumps(list(key), ensure_ascii=False, separators=(",", ":")).encode()


def file_name(key: Key) -> str:
    return hashlib.sha256(encode_key(key)).hexdigest() + ".pcm"


def encode(key: Key, pcm: bytes) -> bytes:
    encoded = encode_key(key)
    header = _HEADER.pack(MAGIC, VERSION, len(encoded), len(pcm), zlib.crc32(pcm))
    return header + encoded + pcm


def decode(key: Key, data: bytes) -> bytes:
    """The PCM in `data` if it is a whole, intact file for `key`; else raises `BadFile`."""
    if len(data) < _HEADER.size:
        raise BadFile("shorter than its header")
    magic, version, key_len, pcm_len, crc = _HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise BadFile("not a prompt file of this version")
    start = _HEADER.size + key_len
    if data[_HEADER.size : start] != encode_key(key):
        raise BadFile("holds another prompt")
    pcm = data[start:]
    if len(pcm) != pcm_len:
        raise BadFile(f"holds {len(pcm)} bytes of audio, its header says {pcm_len}")
    if pcm_len % 2:
        raise BadFile("odd audio length: not PCM16")
    if zlib.crc32(pcm) != crc:
        raise BadFile("audio does not match its checksum")
    return pcm


# The embedded stand-in's prompts live in this subfolder of TELEBRIDGE_CACHE_DIR: a bridge later
# given a Waves key must never play espeak-ng audio from the cache as if Waves had made it.
STANDIN_FOLDER = "standin"


def folder_for(directory: Path, *, standin: bool) -> Path:
    """The folder of prompts made by Waves (`directory`) or by the embedded stand-in."""
    return directory / STANDIN_FOLDER if standin else directory


def open_folder(path: Path) -> None:
    """Create `path` if missing and prove it writable; raises `OSError` if it cannot be used."""
    path.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=path, prefix=".probe.", suffix=".tmp")
    try:
        os.write(fd, b"telebridge")
    finally:
        os.close(fd)
        os.unlink(probe)


class PromptFolder:
    """Prompt files in `path`, at most `max_bytes` of them. Methods block; none raises on I/O."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._warned: set[str] = set()

    def read(self, key: Key) -> bytes | None:
        """The audio stored for `key`, or None (missing, or bad and now deleted)."""
        path = self.path / file_name(key)
        try:
            pcm = decode(key, path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, BadFile) as exc:
            self._discard(path, exc)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently played: last in line for eviction
        return pcm

    def write(self, key: Key, pcm: bytes) -> None:
        """Store `pcm` for `key` atomically (readers see the old file or the new one, whole)."""
        name = file_name(key)
        try:
            fd, temp = tempfile.mkstemp(dir=self.path, prefix=name + ".", suffix=".tmp")
        except OSError as exc:
            logger.warning("prompt cache: cannot write to %s: %s", self.path, exc)
            return
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(encode(key, pcm))
            # No fsync: a file cut short by a power loss fails its header check and is a miss.
            os.replace(temp, self.path / name)
        except OSError as exc:
            logger.warning("prompt cache: cannot write %s: %s", name, exc)
            with contextlib.suppress(OSError):
                os.unlink(temp)
            return
        self._warned.discard(name)
        self.evict()

    def evict(self) -> None:
        """Delete least recently played files until the folder holds at most `max_bytes`."""
        files: list[tuple[float, int, str]] = []
        now = time.time()
        try:
            with os.scandir(self.path) as entries:
                for entry in entries:
                    try:
                        stat = entry.stat()
                    except OSError:
                        continue  # deleted meanwhile (another process sharing the folder)
                    if _NAME.fullmatch(entry.name):
                        files.append((stat.st_mtime, stat.st_size, entry.path))
                    elif _is_stale_temp(entry.name, stat.st_mtime, now):
                        _unlink(entry.path)
        except OSError as exc:
            logger.warning("prompt cache: cannot list %s: %s", self.path, exc)
            return
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            _unlink(path)
            total -= size

    def _discard(self, path: Path, exc: Exception) -> None:
        if path.name not in self._warned:
            self._warned.add(path.name)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            logger.warning("prompt cache: ignoring and deleting %s: %s", path, reason)
        _unlink(str(path))


def _is_stale_temp(name: str, mtime: float, now: float) -> bool:
    if not name.endswith(".tmp"):
        return False
    ours = name.startswith(".probe.") or _NAME.fullmatch(name.split(".", 2)[0] + ".pcm")
    return bool(ours) and now - mtime > STALE_TEMP_SECONDS


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


# --- what a folder holds (for `telebridge prompts`: reads only, touches and deletes nothing) ---


def holds(path: Path, key: Key) -> bool:
    """True when `path` holds a whole, intact file for `key`: one `PromptFolder.read` would use."""
    try:
        decode(key, (path / file_name(key)).read_bytes())
    except (OSError, BadFile):
        return False
    return True


def prompt_files(path: Path) -> set[str]:
    """The names of the prompt files in `path` (none when it cannot be listed), without the
    temporary files of writes under way."""
    try:
        with os.scandir(path) as entries:
            return {e.name for e in entries if _NAME.fullmatch(e.name) and e.is_file()}
    except OSError:
        return set()
