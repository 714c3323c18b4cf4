"""A small registry for rule tests: one tank area, two gas/temperature sensors, an O2 sensor."""

from __future__ import annotations

import pytest

from sensors.registry import Registry, parse_registry
from sensors.uscc import check_char

BODY = "91320506MA1XY412"  # 16 chars + one more below, then the check character


def credit_code(n: int) -> str:
    first17 = f"{BODY}{n % 10}"
    return first17 + check_char(first17)


MINI = f"""
regions:
  - {{code: "320506", name: 吴中区}}
enterprises:
  - id: {credit_code(1)}
    name: Test Chemicals
    region: "320506"
    supervision_class: B
    sites:
      - id: site-a
        name: Tank farm A
        sector: hazchem
        kind: tank_area
        sensors:
          - {{id: a-gas1, quantity: combustible_gas, unit: "%LEL", range: [0, 100], alarms: {{high: 25, high_high: 50}}, deadband: 2.5, period_s: 1, area: t1}}
          - {{id: a-temp1, quantity: temperature, unit: "°C", range: [-20, 150], alarms: {{high: 60, high_high: 80}}, deadband: 2, period_s: 1, area: t1}}
          - {{id: a-o2, quantity: oxygen, unit: "%vol", range: [0, 30], alarms: {{low: 19.5, high: 23.5}}, deadband: 0.3, period_s: 1, area: t1}}
          - {{id: a-fan, quantity: exhaust_fan_running, unit: bool, range: [0, 1], period_s: 1, area: t1}}
      - id: site-b
        name: Tank farm B
        sector: hazchem
        kind: tank_area
        sensors:
          - {{id: b-gas1, quantity: combustible_gas, unit: "%LEL", range: [0, 100], alarms: {{high: 25, high_high: 50}}, period_s: 1, area: t2}}
          - {{id: b-temp1, quantity: temperature, unit: "°C", range: [-20, 150], alarms: {{high: 60}}, period_s: 1, area: t2}}
"""


@pytest.fixture(scope="session")
def mini_registry() -> Registry:
    return parse_registry(MINI, "mini.yaml")
