"""Data classes (数据分类分级, GB/T 43697-2024): each kind of data the platform holds, its grade, who may read it.

The table is written out in docs/data-classes.md; tests/unit/test_history_classes.py checks that the
two agree and that every endpoint applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Grade = Literal["general", "important", "core"]


@dataclass(frozen=True)
class DataClass:
    """One kind of data: its grade, the roles that may read it, whether an enterprise sees only its own."""

    kind: str
    grade: Grade
    readers: tuple[str, ...]
    own_enterprise_only: bool  # for the enterprise role
    exportable: bool
    why: str


TABLE: dict[str, DataClass] = {
    c.kind: c
    for c in (
        DataClass(
            "readings",
            "general",
            ("admin", "duty_officer", "inspector", "enterprise"),
            True,
            True,
            "one enterprise's process values; region-wide bulk is graded by its aggregate (see docs)",
        ),
        DataClass(
            "hazards",
            "important",
            ("admin", "duty_officer", "inspector", "enterprise"),
            True,
            True,
            "where major hazard sources are out of limits: safety-production risk data of the region",
        ),
        DataClass(
            "incidents",
            "important",
            ("admin", "duty_officer", "inspector", "enterprise"),
            True,
            True,
            "linked hazards with severity: the region's live emergency picture",
        ),
        DataClass(
            "tasks",
            "general",
            ("admin", "duty_officer", "inspector", "enterprise"),
            True,
            True,
            "which department acts on what; no process data",
        ),
        DataClass(
            "accidents",
            "important",
            ("admin", "duty_officer", "inspector"),
            False,
            True,
            "casualties and causes before an investigation closes",
        ),
        DataClass(
            "reports",
            "general",
            ("admin", "duty_officer", "inspector"),
            False,
            True,
            "public hazard reports (举报) without who sent them",
        ),
        DataClass(
            "reporter_contacts",
            "important",
            ("admin", "duty_officer", "inspector"),
            False,
            False,
            "personal information of whistle-blowers: only the roles that decide on reports",
        ),
        DataClass("tokens", "important", ("admin",), False, False, "credentials: listed by id, secrets never kept"),
        DataClass(
            "audit", "important", ("admin",), False, True, "who read what: itself evidence, readable by admins only"
        ),
    )
}


class Refused(PermissionError):
    """The caller's role may not read this kind of data (or not this enterprise's)."""


def check(kind: str, role: str, *, export: bool = False) -> DataClass:
    """The class of `kind` if `role` may read (or export) it; Refused otherwise."""
    c = TABLE[kind]
    if role not in c.readers:
        raise Refused(f"role {role} may not read {kind} ({c.grade} data)")
    if export and not c.exportable:
        raise Refused(f"{kind} are never exported")
    return c


def must_audit(c: DataClass, action: str) -> bool:
    """Every export, and every read of important or core data, goes to the audit log."""
    return action == "export" or c.grade in ("important", "core")
