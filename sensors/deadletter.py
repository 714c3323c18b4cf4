"""The dead-letter record: why an input was refused, where it came from, and the input itself.

Shared by the stream worker and the ingest gateway, so every refusal looks the same on the topic.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from typing import Protocol

import orjson


class Consumed(Protocol):
    """Any consumed message: a RawMessage, or a Kafka client's record as it comes (no copy per message)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass
class RawMessage:
    """A consumed telemetry message, whatever its content."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


# The copy of a refused input kept in its dead-letter record; the broker's message limit is
# ~1 MiB, so a bigger input is cut (its size and SHA-256 say what it was).
RAW_COPY_MAX = 64 * 1024
RECORD_MAX = 160 * 1024  # a whole dead-letter record as JSON, well under the broker's limit


def deadletter_record(
    reason: str, detail: str, m: Consumed, *, payload: dict | None = None, site_id: str | None = None
) -> dict:
    """What the dead-letter topic carries: why, where from, and the input itself (cut if large).

    Always serialisable and bounded (under RECORD_MAX as JSON): a payload too deep or too big for
    that is replaced by the raw copy, and a raw copy that JSON escaping would blow up goes as base64."""
    rec: dict = {
        "reason": reason,
        "detail": detail[:2000],
        "topic": m.topic,
        "partition": m.partition,
        "offset": m.offset,
        "site_id": site_id[:128] if isinstance(site_id, str) else None,
        "received_at": int(time.time() * 1000),
    }
    if payload is not None and _fits({**rec, "reading": payload}):
        rec["reading"] = payload
        return rec
    if m.value is not None:
        raw = m.value
        rec["raw_bytes"] = len(raw)
        if len(raw) > RAW_COPY_MAX:
            rec["raw_sha256"] = hashlib.sha256(raw).hexdigest()
            rec["raw_truncated"] = True
            raw = raw[:RAW_COPY_MAX]
        try:
            rec["raw"] = raw.decode()
        except UnicodeDecodeError:
            rec["raw_b64"] = base64.b64encode(raw).decode()
        if "raw" in rec and not _fits(rec):  # control characters are written as \u00XX, 6 bytes each
            rec["raw_b64"] = base64.b64encode(raw).decode()
            del rec["raw"]
    return rec


def _fits(rec: dict) -> bool:
    try:
        return len(orjson.dumps(rec)) <= RECORD_MAX
    except (orjson.JSONEncodeError, TypeError):  # e.g. nested deeper than JSON encoders go
        return False


def ts_hint(ts: int) -> str:
    """Why a time may be off: the contract is epoch milliseconds UTC."""
    if ts < 10**11:
        return " (it looks like seconds: ts must be epoch milliseconds UTC)"
    if ts > 10**14:
        return " (it looks like microseconds: ts must be epoch milliseconds UTC)"
    return ""
