"""Maintenance and calibration windows: a file of who takes which sensor or site out, when and why.

While a window is open, hazards of its sensor (or of every sensor of its site) are suppressed
and counted, not lost (rules/publish.py); when it ends they are re-evaluated at once.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from sensors.yamlsource import Issue, issue_from_pydantic, read_yaml

from .publish import MaintenanceWindow


class WindowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    target: str = Field(min_length=1, description="a sensor id or a site id")
    start: AwareDatetime
    end: AwareDatetime
    who: str = Field(min_length=1)
    why: str = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> WindowSpec:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class MaintenanceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    windows: list[WindowSpec] = Field(default_factory=list)


class MaintenanceError(ValueError):
    """A maintenance file that cannot be used; `issues` name file, line and field."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def load_maintenance(path: str | Path, known_targets: set[str] | None = None) -> list[MaintenanceWindow]:
    """Windows from a YAML file (a missing file means none); unknown targets are errors."""
    path = Path(path)
    if not path.exists():
        return []
    source = str(path)
    data, lines, issues = read_yaml(path.read_text(encoding="utf-8"), source, "a mapping with `windows`")
    if data is None:
        raise MaintenanceError(issues)
    try:
        parsed = MaintenanceFile.model_validate(data)
    except ValidationError as exc:
        raise MaintenanceError(issues + [issue_from_pydantic(e, lines, source) for e in exc.errors()]) from None
    for n, w in enumerate(parsed.windows):
        if known_targets is not None and w.target not in known_targets:
            issues.append(
                Issue(
                    source,
                    lines.get(("windows", n, "target")),
                    f"windows[{n}].target",
                    f"{w.target!r} is neither a sensor nor a site of the registry",
                )
            )
    if issues:
        raise MaintenanceError(issues)
    return [MaintenanceWindow(w.id, w.target, _ms(w.start), _ms(w.end), w.who, w.why) for w in parsed.windows]
