"""Enterprise tokens: one bearer secret per holder, issued for one enterprise, hashed at rest.

A token is 256 random bits shown once; only its SHA-256 (a fast hash suffices for a random secret
nobody can guess) and the PBKDF2 form mosquitto checks MQTT passwords against are kept, so the
MQTT password file can be rewritten after any revocation without the secrets. Pure code: the
records live on a compacted Kafka topic (ingest/token_topic.py); `TokenTable` is the in-memory view.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

TOKEN_PREFIX = "swe_"
# mosquitto 2.0's password file format ($7$: PBKDF2-HMAC-SHA512, 12-byte salt, 101 iterations).
MOSQUITTO_ITERATIONS = 101


@dataclass(frozen=True)
class EnterpriseToken:
    """A token's record: never its secret."""

    token_id: str
    enterprise_id: str
    name: str
    created_at: int
    revoked_at: int | None
    mqtt_hash: str
    token_hash: str = ""

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, value: bytes) -> EnterpriseToken:
        return cls(**orjson.loads(value))


def hash_token(secret: str) -> str:
    """The stored form a bearer token is looked up by."""
    return hashlib.sha256(secret.encode()).hexdigest()


def mosquitto_hash(secret: str, salt: bytes | None = None) -> str:
    """The password-file form mosquitto 2.0 checks the secret against."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, MOSQUITTO_ITERATIONS)
    return f"$7${MOSQUITTO_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def new_token(enterprise_id: str, name: str) -> tuple[EnterpriseToken, str]:
    """A fresh token record and its secret, which is kept nowhere."""
    if not name.strip():
        raise ValueError("a token needs a name (who holds it, e.g. 'plant gateway 1')")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = "ent-" + secrets.token_hex(4)
    tok = EnterpriseToken(token_id, enterprise_id, name, now_ms(), None, mosquitto_hash(secret), hash_token(secret))
    return tok, secret


class TokenTable:
    """Every token record seen, newest per token id; what bearer tokens are checked against."""

    def __init__(self) -> None:
        self._by_id: dict[str, EnterpriseToken] = {}
        self._live_by_hash: dict[str, EnterpriseToken] = {}

    def apply(self, token: EnterpriseToken) -> bool:
        """Take a record in; True if it changed anything."""
        old = self._by_id.get(token.token_id)
        if old == token:
            return False
        if old is not None:
            self._live_by_hash.pop(old.token_hash, None)
        self._by_id[token.token_id] = token
        if token.revoked_at is None:
            self._live_by_hash[token.token_hash] = token
        return True

    def get(self, token_id: str) -> EnterpriseToken | None:
        return self._by_id.get(token_id)

    def verify(self, secret: str) -> EnterpriseToken | None:
        """The live token with this secret, or None."""
        return self._live_by_hash.get(hash_token(secret))

    def list(self, live_only: bool = False) -> list[EnterpriseToken]:
        """Every token (or the live ones), oldest first."""
        tokens = [t for t in self._by_id.values() if not live_only or t.revoked_at is None]
        return sorted(tokens, key=lambda t: (t.created_at, t.token_id))


def revoked(token: EnterpriseToken) -> EnterpriseToken:
    """The record that revokes a token now."""
    return dataclasses.replace(token, revoked_at=now_ms())


def legacy_tokens(path: Path) -> list[EnterpriseToken]:
    """The tokens of a gateway's SQLite file from before tokens moved to Kafka (table `enterprise_tokens`)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT token_id, enterprise_id, name, created_at, revoked_at, mqtt_hash, token_hash "
            "FROM enterprise_tokens ORDER BY created_at, token_id"
        ).fetchall()
    except sqlite3.OperationalError:  # no such table: nothing was ever issued there
        rows = []
    finally:
        db.close()
    return [EnterpriseToken(*r) for r in rows]


def now_ms() -> int:
    return int(time.time() * 1000)
