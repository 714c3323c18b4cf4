"""Rule, correlation and maintenance files reloaded without a restart.

The worker's timer asks every `rules_reload_s` whether a file changed (name, size, mtime). A
changed catalogue is checked in full first; if any file has an error the old rules stay and
the errors are logged with file, line and field. Otherwise the engine swaps it in between two
batches (one event loop: no batch sees half of each), keeping the state of every rule whose
id is unchanged, and the log says which rule ids were added, removed or changed. Correlation
rules (rules/correlation/) are checked against the catalogue and swapped the same way; what the
sites remember (hazards, open incidents, absences waiting) is kept.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from prometheus_client import Counter

from config.settings import Settings
from rules.catalog import Catalog, CatalogError, load_catalog
from rules.engine import RuleEngine
from rules.maintenance import MaintenanceError, load_maintenance
from rules.patterns import CorrelationRuleError, load_correlation_rules

log = logging.getLogger(__name__)
RELOADS = Counter("safewatch_rule_reloads_total", "Rule or maintenance file reloads", ["what", "outcome"])


def _signature(paths: list[Path]) -> tuple:
    out: list[tuple[str, int | None, int | None]] = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p), st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append((str(p), None, None))
    return tuple(out)


def rule_diff(old: Catalog | None, new: Catalog) -> dict[str, list[str]]:
    """Rule ids added, removed and changed between two catalogues."""
    before = {r.id: r for f in (old.sectors.values() if old else []) for r in f.rules}
    after = {r.id: r for f in new.sectors.values() for r in f.rules}
    return {
        "added": sorted(after.keys() - before.keys()),
        "removed": sorted(before.keys() - after.keys()),
        "changed": sorted(k for k in before.keys() & after.keys() if before[k] != after[k]),
    }


def reload_correlation(settings: Settings, seen: tuple | None) -> tuple[tuple, list | None]:
    """For the scope stage: the correlation files' signature now, and their rules if it differs
    from `seen` and they load (errors are logged and counted, and the caller keeps its rules)."""
    sig = _signature(sorted(Path(settings.correlation_dir).glob("*.y*ml")))
    if sig == seen:
        return sig, None
    try:
        rules = load_correlation_rules(settings.correlation_dir)
    except CorrelationRuleError as exc:
        RELOADS.labels("scope", "refused").inc()
        log.error("correlation files changed but have errors; the scope stage keeps its rules:\n%s", exc)
        return sig, None
    RELOADS.labels("scope", "applied").inc()
    return sig, rules


class RuleReloader:
    """Watches the rule directory and the maintenance file for one worker."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.catalog: Catalog | None = None
        self._rules_sig: tuple | None = None
        self._maint_sig: tuple | None = None
        self._corr_sig: tuple | None = None
        self.correlation_rules: list = []  # the last loaded; a new list object after each reload
        self._checked = 0.0

    def _rule_files(self) -> list[Path]:
        return sorted(Path(self.settings.rules_dir).glob("*.y*ml"))

    def _correlation_files(self) -> list[Path]:
        return sorted(Path(self.settings.correlation_dir).glob("*.y*ml"))

    def correlation(self, catalog: Catalog) -> list:
        """Correlation rules checked against `catalog`; at start-up errors are fatal like the catalogue's."""
        ids = {r.id for f in catalog.sectors.values() for r in f.rules}
        rules = load_correlation_rules(self.settings.correlation_dir, set(catalog.sectors), ids)
        self._corr_sig = _signature(self._correlation_files())
        self.correlation_rules = rules
        return rules

    def initial(self, registry) -> tuple[Catalog, list]:
        """First load at start-up: errors here are fatal (the worker refuses to run on bad rules)."""
        self.catalog = load_catalog(self.settings.rules_dir)
        self._rules_sig = _signature(self._rule_files())
        known = set(registry.sensors) | set(registry.sites)
        windows = load_maintenance(self.settings.maintenance, known)
        self._maint_sig = _signature([Path(self.settings.maintenance)])
        return self.catalog, windows

    def maybe_reload(self, engine: RuleEngine) -> None:
        """Reload what changed since the last look; never raises."""
        if time.monotonic() - self._checked < self.settings.rules_reload_s:
            return
        self._checked = time.monotonic()
        sig = _signature(self._rule_files())
        if sig != self._rules_sig:
            self._rules_sig = sig
            try:
                new = load_catalog(self.settings.rules_dir)
            except CatalogError as exc:
                RELOADS.labels("rules", "refused").inc()
                log.error("rule files changed but have errors; keeping the previous rules:\n%s", exc)
            else:
                diff = rule_diff(self.catalog, new)
                engine.set_rules(new)
                self.catalog = new
                RELOADS.labels("rules", "applied").inc()
                log.info(
                    "rules reloaded from %s: added %s, removed %s, changed %s",
                    self.settings.rules_dir,
                    diff["added"] or "none",
                    diff["removed"] or "none",
                    diff["changed"] or "none",
                )
        csig = _signature(self._correlation_files())
        if csig != self._corr_sig and self.catalog is not None:
            self._corr_sig = csig
            try:
                rules = self.correlation(self.catalog)
            except CorrelationRuleError as exc:
                RELOADS.labels("correlation", "refused").inc()
                log.error("correlation files changed but have errors; keeping the previous rules:\n%s", exc)
            else:
                engine.set_correlation_rules(rules)
                RELOADS.labels("correlation", "applied").inc()
                log.info("correlation rules reloaded from %s: %d rules", self.settings.correlation_dir, len(rules))
        msig = _signature([Path(self.settings.maintenance)])
        if msig != self._maint_sig:
            self._maint_sig = msig
            try:
                known = set(engine.registry.sensors) | set(engine.registry.sites)
                windows = load_maintenance(self.settings.maintenance, known)
            except MaintenanceError as exc:
                RELOADS.labels("maintenance", "refused").inc()
                log.error("maintenance file changed but has errors; keeping the previous windows:\n%s", exc)
            else:
                engine.set_maintenance(windows)
                RELOADS.labels("maintenance", "applied").inc()
                log.info("maintenance windows reloaded: %d window(s)", len(windows))
