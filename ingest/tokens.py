"""Enterprise tokens: one bearer secret per holder, issued for one enterprise, hashed at rest.

A token is 256 random bits shown once; the store keeps its SHA-256 (a fast hash suffices for a
random secret nobody can guess) and the PBKDF2 form mosquitto checks MQTT passwords against,
so the MQTT password file can be rewritten after any revocation without the secrets.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

TOKEN_PREFIX = "swe_"
# mosquitto 2.0's password file format ($7$: PBKDF2-HMAC-SHA512, 12-byte salt, 101 iterations).
MOSQUITTO_ITERATIONS = 101

_SCHEMA = """
CREATE TABLE IF NOT EXISTS enterprise_tokens (
    token_id TEXT PRIMARY KEY,
    enterprise_id TEXT NOT NULL,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    mqtt_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
"""


@dataclass(frozen=True)
class EnterpriseToken:
    """A token as listed: never its secret."""

    token_id: str
    enterprise_id: str
    name: str
    created_at: int
    revoked_at: int | None
    mqtt_hash: str


def hash_token(secret: str) -> str:
    """The stored form a bearer token is looked up by."""
    return hashlib.sha256(secret.encode()).hexdigest()


def mosquitto_hash(secret: str, salt: bytes | None = None) -> str:
    """The password-file form mosquitto 2.0 checks the secret against."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, MOSQUITTO_ITERATIONS)
    return f"$7${MOSQUITTO_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class TokenStore:
    """The SQLite file of enterprise tokens; each call opens its own short transaction."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread off: the gateway looks tokens up from its event loop and the MQTT thread.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def issue(self, enterprise_id: str, name: str) -> tuple[EnterpriseToken, str]:
        """Create a token; returns its record and the secret, which is kept nowhere."""
        if not name.strip():
            raise ValueError("a token needs a name (who holds it, e.g. 'plant gateway 1')")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = "ent-" + secrets.token_hex(4)
        tok = EnterpriseToken(token_id, enterprise_id, name, _now_ms(), None, mosquitto_hash(secret))
        self._db.execute(
            "INSERT INTO enterprise_tokens VALUES (?, ?, ?, ?, ?, ?, NULL)",
            (tok.token_id, enterprise_id, name, hash_token(secret), tok.mqtt_hash, tok.created_at),
        )
        return tok, secret

    def revoke(self, token_id: str) -> bool:
        """Revoke at once; False if there is no such live token."""
        cur = self._db.execute(
            "UPDATE enterprise_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
            (_now_ms(), token_id),
        )
        return cur.rowcount == 1

    def verify(self, secret: str) -> EnterpriseToken | None:
        """The live token with this secret, or None."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM enterprise_tokens WHERE token_hash = ? AND revoked_at IS NULL",
            (hash_token(secret),),
        ).fetchone()
        return EnterpriseToken(*row) if row else None

    def list(self, live_only: bool = False) -> list[EnterpriseToken]:
        """Every token (or the live ones), oldest first."""
        where = "WHERE revoked_at IS NULL" if live_only else ""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM enterprise_tokens {where} ORDER BY created_at, token_id")
        return [EnterpriseToken(*r) for r in rows]


_COLUMNS = "token_id, enterprise_id, name, created_at, revoked_at, mqtt_hash"


def _now_ms() -> int:
    return int(time.time() * 1000)
