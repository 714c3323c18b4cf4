"""Names for codes: regions, enterprises, sites and sectors from the registry, rule texts from the
catalogue. The console shows names, never bare codes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from rules.catalog import Catalog, CatalogError, load_catalog
from rules.patterns import CorrelationRule, CorrelationRuleError, load_correlation_rules
from sensors.registry import Registry, RegistryError, load_registry

log = logging.getLogger(__name__)

SECTOR_NAMES = {
    "hazchem": ("危险化学品", "Hazardous chemicals"),
    "mine": ("非煤矿山", "Non-coal mines"),
    "dust": ("粉尘涉爆", "Dust explosion"),
    "ammonia": ("涉氨制冷", "Ammonia refrigeration"),
    "steel": ("冶金", "Steel"),
    "casting": ("铝深井铸造", "Aluminium deep-well casting"),
    "": ("举报投诉", "Public report"),
}
# The hazard kind each non-threshold rule kind emits (threshold rules emit their level's kind).
HAZARD_KINDS = {"offline": ("offline", "site_offline"), "stuck": ("stuck",), "fault": ("sensor_fault",)}
MAINTENANCE_RULE = {
    "id": "notice.instrument_health",
    "description": {
        "zh": "仪表维护通知：监测仪表离线、数值冻结或故障",
        "en": "Maintenance notice: instruments offline, stuck or faulty",
    },
    "action": {
        "zh": "安排仪表维修，尽快恢复监测数据",
        "en": "Send instrument maintenance and restore the monitoring data",
    },
}
NO_ACTION = {"zh": "按本单位应急预案核实处置", "en": "Check on site and act on the enterprise's emergency plan"}


@dataclass
class Directory:
    """Lookups from codes to names and rule texts; empty tables if a file cannot be read."""

    registry: Registry | None
    catalog: Catalog | None
    correlation: list[CorrelationRule] | None = None  # for scope incidents' own rule text and action
    rules: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.rules = {}
        if self.catalog is not None:
            for sector in self.catalog.sectors:
                for rule in self.catalog.rules(sector):
                    self.rules[rule.id] = rule

    def region(self, code: str) -> dict[str, str]:
        """The region's name and its chain up to the province, e.g. 江苏省 苏州市 张家港市."""
        regions = self.registry.regions if self.registry else {}
        chain = [code[:2] + "0000", code[:4] + "00", code]
        names = [regions[c].name for c in dict.fromkeys(chain) if c in regions]
        own = regions[code].name if code in regions else code
        city = code[:4] + "00"
        return {
            "code": code,
            "name": own,
            "full": " ".join(names) or code,
            "city": regions[city].name if city in regions else "",
        }

    def regions(self) -> list[dict[str, str]]:
        """Every region of the registry, by code."""
        regions = self.registry.regions if self.registry else {}
        return [self.region(code) for code in sorted(regions)]

    def enterprises(self) -> list[dict[str, str]]:
        """Every enterprise (id, name, region), by name."""
        if self.registry is None:
            return []
        rows = [{"id": e.id, "name": e.name, "region": e.region} for e in self.registry.enterprises.values()]
        return sorted(rows, key=lambda r: r["name"])

    def sector(self, sector: str) -> dict[str, str]:
        """A sector's names."""
        zh, en = SECTOR_NAMES.get(sector, (sector, sector))
        return {"id": sector, "zh": zh, "en": en}

    def rule_text(self, rule_id: str) -> dict[str, Any]:
        """A rule's description and recommended action in both languages (a default action if it has none)."""
        rule = self.rules.get(rule_id)
        if rule is None:
            return {"id": rule_id, "description": None, "action": NO_ACTION}
        action = rule.action.model_dump() if getattr(rule, "action", None) else NO_ACTION
        return {"id": rule_id, "description": rule.description.model_dump(), "action": action}

    def rule_of_hazard(self, sector: str, kind: str, sensor_id: str) -> str | None:
        """The catalogue rule that raises hazards of `kind` on this sensor (for incidents, which carry
        only the hazards' kinds and sensors in their timeline)."""
        if self.registry is None or self.catalog is None:
            return None
        sensor = self.registry.sensors.get(sensor_id)
        site = self.registry.sites.get(sensor.site_id) if sensor else None
        if sensor is None or site is None:
            return None
        for rule in self.catalog.rules(sector):
            if rule.kind == "interlock":
                # An interlock hazard sits on the response that did not act (the fan), not the trigger.
                if kind == "interlock_failed" and sensor.quantity in rule.expect.quantity:
                    return rule.id
                continue
            if not rule.match.applies(sensor.quantity, site.kind):
                continue
            if rule.kind == "threshold" and any(level.kind == kind for level in rule.levels):
                return rule.id
            if rule.kind == "rate" and kind == f"rate_{rule.direction}":
                return rule.id
            if kind in HAZARD_KINDS.get(rule.kind, ()):
                return rule.id
        return None

    def hazard_rules(self, incident: dict[str, Any]) -> list[dict[str, Any]]:
        """The rule texts of the hazards on an incident's timeline (first seen first, no repeats)."""
        ids: dict[str, None] = {}
        for entry in incident.get("timeline", []):
            words = entry.get("what", "").split()
            if words and words[0] in ("linked", "cleared"):  # a later hazard joining, or one clearing
                words = words[1:]
            if len(words) < 2:
                continue
            # "<kind> <sensor>" or, for the newest entry, "<kind> <quantity> <sensor> <value> …"
            sensor = next((w for w in words[1:3] if self.registry and w in self.registry.sensors), "")
            rule = self.rule_of_hazard(incident.get("sector", ""), words[0], sensor)
            if rule:
                ids[rule] = None
        if incident.get("rule_id") == MAINTENANCE_RULE["id"]:
            return [MAINTENANCE_RULE]
        if incident.get("rule_id") == "report.public":
            return [
                {
                    "id": "report.public",
                    "description": {"zh": "群众举报投诉", "en": "Report from the public"},
                    "action": {
                        "zh": "核实举报内容，必要时现场检查",
                        "en": "Verify the report; inspect on site if needed",
                    },
                }
            ]
        texts = [self.rule_text(r) for r in ids]
        scoped = next((r for r in self.correlation or [] if r.id == incident.get("rule_id")), None)
        if incident.get("scope", "site") != "site" and scoped is not None:
            # An enterprise or region incident: first what the rule linking the sites says to do.
            own = {"id": scoped.id, "description": scoped.text.model_dump(), "action": scoped.action.model_dump()}
            texts.insert(0, own)
        return texts


@lru_cache(maxsize=4)
def load_directory(registry_path: Path, rules_dir: Path, correlation_dir: Path | None = None) -> Directory:
    """The directory from the registry and catalogue files; a file that cannot be read leaves its table empty."""
    registry: Registry | None = None
    catalog: Catalog | None = None
    try:
        registry = load_registry(registry_path)
    except (RegistryError, OSError) as exc:
        log.error("registry %s not readable (%s): the console shows codes instead of names", registry_path, exc)
    try:
        catalog = load_catalog(rules_dir)
    except (CatalogError, OSError) as exc:
        log.error("rule catalogue %s not readable (%s): the console shows no rule texts", rules_dir, exc)
    correlation = None
    if correlation_dir is not None:
        try:
            correlation = load_correlation_rules(correlation_dir)
        except (CorrelationRuleError, OSError) as exc:
            log.error("correlation rules %s not readable (%s): scope incidents show no rule text", correlation_dir, exc)
    return Directory(registry, catalog, correlation)
