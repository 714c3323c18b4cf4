"""HMAC-SHA256 signatures of webhook bodies, with a timestamp against replays (docs/webhook.md).

The signed text is `<timestamp>.<body>`: a receiver that checks the signature and that the
timestamp is recent knows the body came from us, unaltered, and is not an old one replayed.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Safewatch-Timestamp"
SIGNATURE_HEADER = "X-Safewatch-Signature"
TOLERANCE_S = 300  # what receivers should accept; documented, not enforced by the sender


def signature(key: str, timestamp: int, body: bytes) -> str:
    """The signature header value: `v1=` and the hex HMAC-SHA256 of `<timestamp>.<body>`."""
    mac = hmac.new(key.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def sign(key: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers that sign one request."""
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(key, timestamp, body)}


def verify(key: str, headers: dict[str, str], body: bytes, now: int, tolerance_s: int = TOLERANCE_S) -> bool:
    """What a receiver does: the signature matches (compared in constant time) and the timestamp
    is within `tolerance_s` of `now` (epoch seconds). Header names are matched case-insensitively."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        timestamp = int(lower[TIMESTAMP_HEADER.lower()])
        given = lower[SIGNATURE_HEADER.lower()]
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(given, signature(key, timestamp, body))
