"""Write the per-sector scenario files `<sector>.jsonl`: simulator frames, one message per line.

Run from anywhere: `.venv/bin/python tests/data/scenarios/make_scenarios.py`. Deterministic:
seed SEED, start START_MS (epoch ms), one tick a second, TICKS[sector] ticks, only that sector's
sites. Lines are `PlantSimulator.tick()` message bytes, so a malformed message stays as it was.
The hazards each file must open are written by hand in `<sector>.expected.yaml` beside it,
from the timelines below (seconds since the start; a window is [start, start + duration)).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the repo root, so `sensors` imports without an install

from sensors.registry import load_registry  # noqa: E402
from sensors.simulator import PlantSimulator, Scenario  # noqa: E402

SEED = 20_251_125
START_MS = 1_795_000_000_000
TICK_S = 1.0
# Mine rate rules look at an hour (pond level, 0.1 m/h) and fire once half of it is filled:
# the mine file is 40 minutes long. Every other sector fits in 4 minutes.
TICKS = {"hazchem": 240, "mine": 2400, "dust": 240, "ammonia": 240, "steel": 240, "casting": 240}


def hazchem() -> list[Scenario]:
    """Tank farms, a chlorination unit, LPG spheres, a jetty."""
    return [
        # 10-18  jetty 2: a burst of malformed messages (dead-letter path; no hazard)
        Scenario("malformed", "hz-zjg-jetty01", 10, 8),
        # 20-80  leak at tank T101: both gas detectors past L1 and L2, tank temperature past high
        #        and rising ~45 °C/min on the way (the tank temperature rate rule)
        Scenario("leak", "hz-zjg-tank01", 20, 60, area="tank-T101"),
        # 30-180 tank T201 warms at 5 °C/min and levels off below its high set point: rate only
        Scenario("rate", "hz-wz-tank01", 30, 150, sensor_id="hz-wz-tank01-t201-temp01", slope_per_min=5.0),
        # 40-110 reactor R201 pressure transmitter frozen (2 s sampling: 35 equal samples)
        Scenario("stuck", "hz-lh-unit01", 40, 70, sensor_id="hz-lh-unit01-r201-press01"),
        # 60-90  sphere S1 pressure reads past its range (2.75 MPa on 0-2.5): fault, not a high alarm
        Scenario("out_of_range", "hz-jy-lpg01", 60, 30, sensor_id="hz-jy-lpg01-s1-press01"),
        # 100-130 chlorine detector of the spare tank V302 silent (6 s makes it offline), then back
        Scenario("silent", "hz-lh-tank02", 100, 30, sensor_id="hz-lh-tank02-v302-cl2-01"),
        # 110-170 sphere S2 level to high-high; its inlet ESV never closes: interlock failed
        Scenario("interlock", "hz-jy-lpg01", 110, 60, sensor_id="hz-jy-lpg01-s2-level01", respond=False),
        # 150-210 tank T202 level to high-high; its inlet ESV closes 8 s after the crossing,
        #         after the rule armed and inside its 10 s: satisfied
        Scenario("interlock", "hz-wz-tank01", 150, 60, sensor_id="hz-wz-tank01-t202-level01", respond_after_s=8),
        # 190-225 the whole jetty silent: one site_offline, no sensor offline
        Scenario("silent", "hz-zjg-jetty01", 190, 35),
    ]


def mine() -> list[Scenario]:
    """Two tailings ponds, two pit slopes, an underground mine (2400 s)."""
    return [
        # 0-2400 pond 1 level rises 0.3 m/h (0.2 m in the file) from the start, far below its
        #        control level: the 0.1 m/h rule fires once its hour window is half full (~1800 s)
        Scenario("rate", "mn-jn-tailings01", 0, 2400, sensor_id="mn-jn-tailings01-pond-level01", slope_per_min=0.005),
        # 60-180 CO at underground level 150 past 24 ppm (L1) and its 50 ppm L2
        Scenario("excursion", "mn-jn-ug01", 60, 120, sensor_id="mn-jn-ug01-l150-co01"),
        # 200-500 phreatic line 1 rises toward the dam face: depth below 1.1 x control (orange)
        #         and below control (red); 60 s sampling and a 60 s on-delay need a long hold
        Scenario("excursion", "mn-jn-tailings01", 200, 300, sensor_id="mn-jn-tailings01-dam-phreatic01"),
        # 300-500 oxygen at level 150 frozen (5 s sampling: 40 equal samples)
        Scenario("stuck", "mn-jn-ug01", 300, 200, sensor_id="mn-jn-ug01-l150-o2-01"),
        # 520-580 temperature at level 150 past its range (55 °C on 0-50) and flagged bad: a fault,
        #         not a high alarm
        Scenario("out_of_range", "mn-jn-ug01", 520, 60, sensor_id="mn-jn-ug01-l150-temp01", quality="bad"),
        # 600-800 dry beach 1 of pond 2 silent (30 s sampling: offline after 90 s), then back
        Scenario("silent", "mn-ts-tailings02", 600, 200, sensor_id="mn-ts-tailings02-beach-len01"),
        # 900-1200 the whole north/east slope silent: one site_offline, no sensor offline
        Scenario("silent", "mn-jr-slope01", 900, 300),
        # 1000-2400 pond 2 in a slow flood, each item only at its warning (yellow) level and 400 s
        #           apart (past the 300 s window): 24 h rainfall from 1000, pond level from 1400,
        #           dry beach from 1800. Two open together make an incident; with the third the
        #           flood rule (rain + pond + beach open together) raises it one colour, to orange.
        Scenario("flap", "mn-ts-tailings02", 1000, 1400, sensor_id="mn-ts-tailings02-rain-24h01", flap_s=(1400, 1)),
        Scenario("flap", "mn-ts-tailings02", 1400, 1000, sensor_id="mn-ts-tailings02-pond-level01", flap_s=(1000, 1)),
        Scenario("flap", "mn-ts-tailings02", 1800, 600, sensor_id="mn-ts-tailings02-beach-len01", flap_s=(600, 1)),
    ]


def dust() -> list[Scenario]:
    """Two wet collectors (aluminium polishing), three bag filters (wood)."""
    return [
        # 0-220  bag filter 3 hopper warms 6 °C/min (smouldering); its rate rule looks at 5 min and
        #        fires once half of it is filled (~150 s); the ramp levels off under 60 °C
        Scenario("rate", "du-wj-saw01", 0, 220, sensor_id="du-wj-saw01-bf3-hopper-temp01", slope_per_min=6.0),
        # 20-80  bag filter 2 differential pressure past 1500 Pa (high) and 2000 Pa (high-high)
        Scenario("excursion", "du-wj-dc01", 20, 60, sensor_id="du-wj-dc01-bf2-dp01"),
        # 30-90  bag filter 2 hopper past 60 °C (high) and 70 °C (high-high) while its pressure drop
        #        is in alarm: the collector-fire rule (same collector, both open) matches
        Scenario("excursion", "du-wj-dc01", 30, 60, sensor_id="du-wj-dc01-bf2-hopper-temp01"),
        # 30-150 wet collector 1 tank level frozen (5 s sampling: 24 equal samples)
        Scenario("stuck", "du-yx-dc01", 30, 120, sensor_id="du-yx-dc01-wc1-level01"),
        # 60-100 bag filter 1 airlock current silent (offline after 15 s), then back
        Scenario("silent", "du-wj-dc01", 60, 40, sensor_id="du-wj-dc01-bf1-airlock01"),
        # 120-170 the whole polishing shop 2 silent: one site_offline, no sensor offline
        Scenario("silent", "du-yx-dc02", 120, 50),
        # 160-190 wet collector 1 differential pressure past its range: fault, not a high alarm
        Scenario("out_of_range", "du-yx-dc01", 160, 30, sensor_id="du-yx-dc01-wc1-dp01"),
    ]


def ammonia() -> list[Scenario]:
    """Two machine rooms and a cold store's valve stations."""
    return [
        # 20-80  compressor C1 discharge pressure past high and high-high
        Scenario("excursion", "am-qd-mr01", 20, 60, sensor_id="am-qd-mr01-comp1-press01"),
        # 30-90  NH3 at valve station 1 past 150 ppm (L1); its exhaust fan starts 8 s after the
        #        crossing, after the rule armed and inside its 10 s: satisfied
        Scenario("interlock", "am-qd-cs01", 30, 60, sensor_id="am-qd-cs01-vs1-nh3-01", respond_after_s=8),
        # 30-150 receiver R1 level frozen (5 s sampling: 24 equal samples)
        Scenario("stuck", "am-qd-mr01", 30, 120, sensor_id="am-qd-mr01-rec-level01"),
        # 60-100 machine room NH3 detector 2 silent (offline after 6 s), then back
        Scenario("silent", "am-qd-mr01", 60, 40, sensor_id="am-qd-mr01-mr-nh3-02"),
        # 100-160 Dongtai machine room NH3 past 25 %LEL (L2); the exhaust fan never starts
        Scenario("interlock", "am-dt-mr01", 100, 60, sensor_id="am-dt-mr01-mr-nh3lel01", respond=False),
        # 160-190 receiver R1 pressure past its range: fault, not a high alarm
        Scenario("out_of_range", "am-qd-mr01", 160, 30, sensor_id="am-qd-mr01-rec-press01"),
        # 170-230 NH3 in cold room 3 past 150 ppm: an alarm, but the room has no exhaust fan, so no interlock
        Scenario("excursion", "am-qd-cs01", 170, 60, sensor_id="am-qd-cs01-cr3-nh3-01"),
    ]


def steel() -> list[Scenario]:
    """Blast furnace gas area, converter and EAF cooling, converter gas holder."""
    return [
        # 20-195 EAF roof in-out flow difference flaps across its high set point: 4 s above,
        #        31 s below (the 3 s on-delay and 30 s off-delay let it open and clear each cycle);
        #        the 5th clear inside 10 minutes holds it as one flapping hazard
        Scenario("flap", "st-jj-eaf01", 20, 175, sensor_id="st-jj-eaf01-roof-dflow01", flap_s=(4.0, 31.0)),
        # 30-150 EAF wall-panel outlet water warms 8 °C/min and levels off under 50 °C: rate only
        Scenario("rate", "st-jj-eaf01", 30, 120, sensor_id="st-jj-eaf01-panel-tout01", slope_per_min=8.0),
        # 40-100 CO at the gas holder past 24 ppm (L1) and 160 ppm (L2)
        Scenario("excursion", "st-jj-gas01", 40, 60, sensor_id="st-jj-gas01-holder-co01"),
        # 50-80  blast furnace top oxygen reads past its range (27.5 %vol on 0-25): fault, not high
        Scenario("out_of_range", "st-xb-bfgas01", 50, 30, sensor_id="st-xb-bfgas01-top-o2-01"),
        # 100-140 converter lance inlet flow frozen (1 s sampling: 40 equal samples)
        Scenario("stuck", "st-xb-bof01", 100, 40, sensor_id="st-xb-bof01-lance-fin01"),
        # 160-175 converter hood outlet temperature silent (offline after 3 s), then back
        Scenario("silent", "st-xb-bof01", 160, 15, sensor_id="st-xb-bof01-hood-tout01"),
    ]


def casting() -> list[Scenario]:
    """Three deep-well casting machines."""
    return [
        # 10-110 pit 2 furnace-outlet launder level flaps across its high set point: 3 s above,
        #        17 s below (1 s on-delay, 15 s off-delay); the 5th clear makes it flapping
        Scenario("flap", "ca-jy-pit02", 10, 100, sensor_id="ca-jy-pit02-outlet-lvl01", flap_s=(3.0, 17.0)),
        # 20-60  pit 2 cooling-water pressure drops 1.2 MPa/min and levels off above its low set
        #        point: the sudden-drop (rate) rule only
        Scenario("rate", "ca-jy-pit02", 20, 40, sensor_id="ca-jy-pit02-mould-pin01", slope_per_min=-1.2),
        # 30-60  pit 1 melt temperature frozen (1 s sampling: 30 equal samples)
        Scenario("stuck", "ca-jy-pit01", 30, 30, sensor_id="ca-jy-pit01-melt-temp01"),
        # 40-100 Changshu pit cooling-water temperature past high and high-high
        Scenario("excursion", "ca-cs-pit01", 40, 60, sensor_id="ca-cs-pit01-mould-tin01"),
        # 70-100 pit 2 junction launder level past its range: fault, and no launder interlock
        Scenario("out_of_range", "ca-jy-pit02", 70, 30, sensor_id="ca-jy-pit02-launder-lvl01"),
        # 100-140 Changshu emergency water level silent (5 s sampling: offline after 15 s), then back
        Scenario("silent", "ca-cs-pit01", 100, 40, sensor_id="ca-cs-pit01-ews-level01"),
        # 120-180 pit 1 junction launder level past high-high; neither valve acts: both launder
        #         interlocks fail (the valves are in the mould area; the rule's scope is the site)
        Scenario(
            "interlock", "ca-jy-pit01", 120, 60, sensor_id="ca-jy-pit01-launder-lvl01", area="mould", respond=False
        ),
        # 150-210 Changshu cooling-water pressure below low-low (a sudden drop too); shut-off and
        #         discharge valves act 4 s after the crossing, inside the 5 s: satisfied
        Scenario("interlock", "ca-cs-pit01", 150, 60, sensor_id="ca-cs-pit01-mould-pin01", respond_after_s=4),
        # 170-230 pit 2 cooling-water flow below low-low; only the shut-off valve closes: the
        #         discharge interlock fails, the shut-off one does not
        Scenario(
            "interlock",
            "ca-jy-pit02",
            170,
            60,
            sensor_id="ca-jy-pit02-mould-fin01",
            response_id="ca-jy-pit02-mould-shutoff01",
            respond_after_s=4,
        ),
    ]


PLANS = {"hazchem": hazchem, "mine": mine, "dust": dust, "ammonia": ammonia, "steel": steel, "casting": casting}


def write(sector: str, registry, out_dir: Path = HERE) -> Path:
    """Simulate one sector and write its frames, one message per line."""
    sites = [s.id for s in registry.sites_by_sector(sector)]
    sim = PlantSimulator(registry, seed=SEED, start_ms=START_MS, tick_s=TICK_S, scenarios=PLANS[sector](), sites=sites)
    path = out_dir / f"{sector}.jsonl"
    with open(path, "wb") as fh:
        for _ in range(TICKS[sector]):
            for _topic, _key, raw in sim.tick():
                fh.write(raw + b"\n")
    return path


def main() -> None:
    registry = load_registry()
    for sector in PLANS:
        path = write(sector, registry)
        print(f"{path.name}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
