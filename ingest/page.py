"""The feed report as a plain HTML page (no scripts, no CDN)."""

from __future__ import annotations

from html import escape


def feed_page(report: dict) -> str:
    """One page: counts, silent sensors, sensors per site, refused examples, gateway clock skew."""
    e = escape
    rows = []
    for site in report["sites"]:
        for s in site["sensors"]:
            state = "<b>silent</b>" if s["silent"] else "ok"
            rows.append(
                f"<tr><td>{e(site['site_id'])}</td><td>{e(s['sensor_id'])}</td><td>{s['period_s']:g}</td>"
                f"<td>{s['last_ts'] or '-'}</td><td>{state}</td></tr>"
            )
    counts = "".join(
        f"<tr><td>{e(k)}</td><td>{report['last_hour'].get(k, 0)}</td><td>{v}</td></tr>"
        for k, v in sorted(report["last_day"].items())
    )
    examples = "".join(
        f"<tr><td>{e(reason)}</td><td>{e(str(x['field']))}</td><td>{e(x['detail'] or '')}</td>"
        f"<td><code>{e(x['input'])}</code></td></tr>"
        for reason, xs in report["refused_examples"].items()
        for x in xs
    )
    skew = "".join(
        f"<tr><td>{e(g)}</td><td>{v['skew_ms']}</td></tr>" for g, v in report["gateway_clock_skew_ms"].items()
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Feed {e(report["enterprise_id"])}</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}</style></head><body>
<h1>Feed health of {e(report["enterprise_id"])}</h1><p>{e(report["state"])}</p>
<h2>Silent sensors ({len(report["silent_sensors"])})</h2><p>{e(", ".join(report["silent_sensors"]) or "none")}</p>
<h2>Counts</h2><table><tr><th>what</th><th>last hour</th><th>last day</th></tr>{counts}</table>
<h2>Refused input (recent examples)</h2>
<table><tr><th>reason</th><th>field</th><th>detail</th><th>input</th></tr>{examples}</table>
<h2>Gateway clock (received minus event time, ms)</h2><table>{skew}</table>
<h2>Sensors</h2><table><tr><th>site</th><th>sensor</th><th>period s</th><th>newest ts</th><th>state</th></tr>
{"".join(rows)}</table></body></html>"""
