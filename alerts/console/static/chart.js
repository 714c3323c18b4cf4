// A small inline SVG line chart of one sensor's readings, with its set point and the hazard's span.
"use strict";

const SWChart = (() => {
  function svg(points, threshold, start, end, label) {
    if (!points || points.length < 2) return '<p class="nodata">—</p>';
    const W = 520, H = 150, L = 44, R = 8, T = 10, B = 22;
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]).concat(threshold != null ? [threshold] : []);
    const x0 = Math.min(...xs), x1 = Math.max(...xs);
    let y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (y1 === y0) { y1 += 1; y0 -= 1; }
    const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad;
    const X = (v) => L + ((v - x0) / (x1 - x0 || 1)) * (W - L - R);
    const Y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
    const line = points.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
    const spanEnd = end || x1;
    const span = start >= x0 && start <= x1
      ? `<rect x="${X(start).toFixed(1)}" y="${T}" width="${Math.max(1, X(Math.min(spanEnd, x1)) - X(start)).toFixed(1)}" height="${H - T - B}" class="span"/>` : "";
    const limit = threshold != null
      ? `<line x1="${L}" x2="${W - R}" y1="${Y(threshold).toFixed(1)}" y2="${Y(threshold).toFixed(1)}" class="limit"/><text x="${W - R}" y="${(Y(threshold) - 3).toFixed(1)}" text-anchor="end" class="limit-label">${threshold}</text>` : "";
    const ticks = [y0 + pad, (y0 + y1) / 2, y1 - pad].map((v) => `<text x="${L - 4}" y="${Y(v).toFixed(1)}" text-anchor="end" dominant-baseline="middle">${v.toFixed(1)}</text>`).join("");
    return `<svg class="chart" viewBox="0 0 ${W} ${H}" role="img">
      ${span}<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" class="axis"/><line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" class="axis"/>
      ${ticks}${limit}<path d="${line}" class="series"/>
      <text x="${L}" y="${H - 6}">${label(x0)}</text><text x="${W - R}" y="${H - 6}" text-anchor="end">${label(x1)}</text></svg>`;
  }
  return { svg };
})();
