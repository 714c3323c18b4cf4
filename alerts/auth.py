"""API tokens and roles: who may call the alert API, and what each role may do.

A token is shown once, when it is issued; the store keeps only its SHA-256. The tokens are
256 random bits, so a fast hash is enough (nobody can guess one to test against the hash);
a slow password hash would only cost every request time.

Roles: `admin` (everything), `duty_officer` (read everything, act on every task),
`inspector` (read everything, act on nothing), `enterprise` (an enterprise operator: read
its own enterprise's incidents and tasks, act on its own enterprise-level tasks).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal

from pydantic import BaseModel

from alerts.store import TaskStore, now_ms

Role = Literal["admin", "duty_officer", "inspector", "enterprise"]
ROLES: tuple[str, ...] = ("admin", "duty_officer", "inspector", "enterprise")
TOKEN_PREFIX = "swt_"


class TokenInfo(BaseModel):
    """A token as listed: never its secret, never its hash."""

    token_id: str
    name: str
    role: Role
    enterprise_id: str | None
    created_at: int
    revoked_at: int | None


class Principal(BaseModel):
    """Who is calling: the holder of one valid token."""

    token_id: str
    name: str
    role: Role
    enterprise_id: str | None


def hash_token(secret: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_token(
    store: TaskStore, name: str, role: str, enterprise_id: str | None = None, now: int | None = None
) -> tuple[TokenInfo, str]:
    """Create a token; returns its record and the secret, which is not kept anywhere."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if (role == "enterprise") != bool(enterprise_id):
        raise ValueError("an enterprise token needs --enterprise, and only an enterprise token takes one")
    if not name.strip():
        raise ValueError("a token needs a name (who holds it)")
    now = now_ms() if now is None else now
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = "tok-" + secrets.token_hex(4)
    with store.transaction() as db:
        db.execute(
            "INSERT INTO api_tokens (token_id, name, role, enterprise_id, token_hash, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (token_id, name, role, enterprise_id, hash_token(secret), now),
        )
    info = TokenInfo(
        token_id=token_id, name=name, role=role, enterprise_id=enterprise_id, created_at=now, revoked_at=None
    )
    return info, secret


def revoke_token(store: TaskStore, token_id: str, now: int | None = None) -> bool:
    """Revoke a token by id; False if there is no such live token."""
    now = now_ms() if now is None else now
    with store.transaction() as db:
        cur = db.execute(
            "UPDATE api_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL", (now, token_id)
        )
    return cur.rowcount == 1


def list_tokens(store: TaskStore) -> list[TokenInfo]:
    """Every token ever issued, oldest first (revoked ones too, for the record)."""
    with store.reading() as db:
        rows = db.execute(
            "SELECT token_id, name, role, enterprise_id, created_at, revoked_at FROM api_tokens ORDER BY created_at"
        ).fetchall()
    return [TokenInfo(**dict(r)) for r in rows]


def authenticate(store: TaskStore, secret: str) -> Principal | None:
    """The holder of a live token, or None."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    with store.reading() as db:
        row = db.execute(
            "SELECT token_id, name, role, enterprise_id FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL",
            (hash_token(secret),),
        ).fetchone()
    return Principal(**dict(row)) if row else None
