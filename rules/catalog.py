"""The rule catalogue: one YAML file per sector under `rules/catalog/`, checked like code.

A rule says which sensors it applies to (`match`: quantities, optionally site kinds), what it
detects, where its numbers come from (`standard`) and which colour each level has. A set
point may be a number from a standard or a reference to the sensor's own registry entry
(`registry.high`, `0.8 * registry.high_high`) where docs/standards.md says the value is design data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from config.topics import Sector
from sensors.yamlsource import Issue, issue_from_pydantic, read_yaml

from .models import Severity

CATALOG_DIR = Path(__file__).resolve().parent / "catalog"
REF = re.compile(r"^\s*(?:(?P<factor>\d+(?:\.\d+)?)\s*\*\s*)?registry\.(?P<name>high|high_high|low|low_low)\s*$")
RULE_ID = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Text(Strict):
    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)


SetPoint = float | str  # a number, or `registry.<name>` optionally scaled: `1.1 * registry.low_low`


def check_setpoint(value: SetPoint) -> SetPoint:
    """Numbers pass; strings must be a registry reference."""
    if isinstance(value, str) and not REF.match(value):
        raise ValueError(
            f"{value!r} is neither a number nor `registry.<high|high_high|low|low_low>` "
            "(optionally `<factor> * registry.<name>`)"
        )
    return value


class Match(Strict):
    """Which sensors a rule applies to."""

    quantity: list[str] | Literal["*"]
    site_kind: list[str] | None = None

    def applies(self, quantity: str, site_kind: str) -> bool:
        """True when a sensor of `quantity` on a site of `site_kind` is covered."""
        q_ok = self.quantity == "*" or quantity in self.quantity
        return q_ok and (self.site_kind is None or site_kind in self.site_kind)


class RuleBase(Strict):
    id: Annotated[str, Field(pattern=RULE_ID)]
    description: Text
    action: Text | None = None  # what the people on duty should do first (shown by the duty console)
    standard: str = Field(min_length=1, description="where the numbers come from; 'design data' if per-installation")
    match: Match


class Level(Strict):
    """One alarm level: opens past `above`/`below`, clears back past `clear` (hysteresis)."""

    kind: Annotated[str, Field(pattern=r"^[a-z][a-z_0-9]*$")]
    above: SetPoint | None = None
    below: SetPoint | None = None
    clear: SetPoint | None = None  # default: the set point ∓ the sensor's deadband
    colour: Severity

    _above = field_validator("above", "below", "clear")(lambda cls, v: v if v is None else check_setpoint(v))

    @model_validator(mode="after")
    def _one_direction(self) -> Level:
        if (self.above is None) == (self.below is None):
            raise ValueError("a level needs exactly one of `above` or `below`")
        return self


class ThresholdRule(RuleBase):
    kind: Literal["threshold"]
    levels: list[Level] = Field(min_length=1, max_length=8)
    on_delay_s: float = Field(0.0, ge=0)  # the condition must hold this long before the hazard opens
    off_delay_s: float = Field(0.0, ge=0)  # the value must stay clear this long before it clears

    @model_validator(mode="after")
    def _levels_per_direction(self) -> ThresholdRule:
        for direction in ("above", "below"):
            n = sum(1 for lv in self.levels if getattr(lv, direction) is not None)
            if n > 4:
                raise ValueError(f"at most 4 `{direction}` levels, got {n}")
        kinds = [lv.kind for lv in self.levels]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"level kinds must be distinct, got {kinds}")
        return self


class RateRule(RuleBase):
    kind: Literal["rate"]
    direction: Literal["rise", "fall"]
    limit: float = Field(gt=0)  # in the sensor's unit per `per_s` seconds
    per_s: float = Field(gt=0)  # 60 = per minute, 3600 = per hour, 86400 = per day
    window_s: float = Field(gt=0)
    min_samples: int = Field(3, ge=2)
    off_delay_s: float = Field(0.0, ge=0)
    colour: Severity


class OfflineRule(RuleBase):
    kind: Literal["offline"]
    periods: float = Field(gt=1)  # k: silent for k × sampling period ⇒ offline
    colour: Severity
    site_colour: Severity


class StuckRule(RuleBase):
    kind: Literal["stuck"]
    samples: int = Field(ge=3)  # this many identical consecutive values ⇒ frozen transmitter
    colour: Severity


class FaultRule(RuleBase):
    """An instrument fault after NAMUR NE 43: quality `bad` at once, or a value beyond the failure
    limits (−2.5 % / +106.25 % of the measuring span) held for `on_delay_s`; it clears only once a
    good value is back inside the measurement band (−1.25 % / +103.125 %)."""

    kind: Literal["fault"]
    colour: Severity
    # NE 43 practice: a failure level must persist about 4 s before it counts as a fault.
    on_delay_s: float = Field(4.0, ge=0)


class Trigger(Strict):
    quantity: list[str]
    kinds: list[str]  # hazard kinds that arm the expectation, e.g. [high_high]


class Expect(Strict):
    quantity: list[str]
    op: Literal[">=", "<=", "=="]
    value: float
    within_s: float = Field(gt=0)


class InterlockRule(RuleBase):
    """When a trigger hazard opens, a response signal in the same area (or site) must follow."""

    kind: Literal["interlock"]
    trigger: Trigger
    expect: Expect
    scope: Literal["area", "site"] = "area"
    colour: Severity = "red"


Rule = Annotated[
    ThresholdRule | RateRule | OfflineRule | StuckRule | FaultRule | InterlockRule, Field(discriminator="kind")
]


class Flapping(Strict):
    max_changes: int = Field(ge=2)  # opens within the window before a hazard is held as flapping
    window_s: float = Field(gt=0)


class Aggregation(Strict):
    """GB 39496 point counting: N points of one item at a colour raise the item one colour."""

    blue: int = Field(4, ge=2)
    yellow: int = Field(3, ge=2)
    orange: int = Field(2, ge=2)


class CatalogFile(Strict):
    sector: Sector
    flapping: Flapping
    aggregation: Aggregation | None = None
    rules: list[Rule] = Field(min_length=1)


@dataclass(frozen=True)
class Catalog:
    """Every sector's rule file, checked."""

    sectors: dict[str, CatalogFile]
    sources: dict[str, str]

    def rules(self, sector: str) -> list:
        """The rules of one sector (empty when the sector has no file)."""
        f = self.sectors.get(sector)
        return list(f.rules) if f else []


class CatalogError(ValueError):
    """Rule files that cannot be used; `issues` lists every problem with file, line and field."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


RULE_KINDS = ("threshold", "rate", "offline", "stuck", "fault", "interlock")


def _untagged(err: dict) -> dict:
    """Drop the discriminator pydantic puts in the path (`rules.2.threshold.levels`), which is
    not a key of the file: the error then names `rules[2].levels` and that key's line."""
    loc = tuple(err["loc"])
    if len(loc) > 2 and loc[0] == "rules" and isinstance(loc[1], int) and loc[2] in RULE_KINDS:
        return {**err, "loc": loc[:2] + loc[3:]}
    return err


def parse_catalog_file(text: str, source: str) -> tuple[CatalogFile | None, list[Issue]]:
    """One rule file → its model, or the problems found in it."""
    data, lines, issues = read_yaml(text, source, "a mapping with `sector`, `flapping` and `rules`")
    if data is None:
        return None, issues
    try:
        parsed = CatalogFile.model_validate(data)
    except ValidationError as exc:
        return None, issues + [issue_from_pydantic(_untagged(dict(e)), lines, source) for e in exc.errors()]
    ids = [r.id for r in parsed.rules]
    for i, rid in enumerate(ids):
        if rid in ids[:i]:
            issues.append(Issue(source, lines.get(("rules", i, "id")), f"rules[{i}].id", f"duplicate rule id {rid!r}"))
        elif not rid.startswith(parsed.sector + "."):
            issues.append(
                Issue(
                    source,
                    lines.get(("rules", i, "id")),
                    f"rules[{i}].id",
                    f"rule id {rid!r} must start with the sector id {parsed.sector!r}",
                )
            )
    return (parsed if not issues else None), issues


def load_catalog(directory: str | Path = CATALOG_DIR) -> Catalog:
    """Read and check every `<sector>.yaml` in a directory; raise CatalogError listing all problems."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CatalogError([Issue(str(directory), None, "", "not a directory")])
    sectors: dict[str, CatalogFile] = {}
    sources: dict[str, str] = {}
    issues: list[Issue] = []
    for path in sorted(directory.glob("*.y*ml")):
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(Issue(source, None, "", f"cannot read: {exc}"))
            continue
        parsed, found = parse_catalog_file(text, source)
        issues += found
        if parsed is None:
            continue
        if path.stem != parsed.sector:
            # Files open with a comment block, so find the `sector:` line rather than assume line 1.
            line = next((n for n, text_line in enumerate(text.splitlines(), 1) if text_line.startswith("sector:")), 1)
            issues.append(
                Issue(
                    source,
                    line,
                    "sector",
                    f"file {path.name} holds sector {parsed.sector!r}; name it {parsed.sector}.yaml",
                )
            )
            continue
        sectors[parsed.sector] = parsed
        sources[parsed.sector] = source
    if issues:
        raise CatalogError(issues)
    return Catalog(sectors=sectors, sources=sources)


def resolve(value: SetPoint | None, alarms) -> float | None:
    """A set point's number for one sensor; None when it refers to a set point the sensor lacks."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    m = REF.match(value)
    if m is None:  # the schema only lets references through; be explicit anyway
        raise ValueError(f"not a set point reference: {value!r}")
    base = getattr(alarms, m["name"])
    if base is None:
        return None
    return float(base) * float(m["factor"] or 1.0)
