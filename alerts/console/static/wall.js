// The wall view: big counts, red/orange incidents, risk by enterprise, latest events; updates itself.
"use strict";

(() => {
  const { t, pick, esc, dept, time, api } = SW;
  const SEVERITIES = ["red", "orange", "yellow", "blue"];
  let data = null;
  let timer = null;

  function countsTable(rows) {
    const head = `<tr><th></th><th>Σ</th>${SEVERITIES.map((s) => `<th class="sev-text-${s}">${esc(t(s))}</th>`).join("")}</tr>`;
    return head + rows.map((r) => `<tr data-key="${esc(r.key)}"><th>${esc(pick(r.label) || r.key)}</th><td class="total">${r.total}</td>${SEVERITIES.map((s) => `<td class="sev-text-${s}">${r[s] || ""}</td>`).join("")}</tr>`).join("");
  }

  function render() {
    if (!data) return;
    document.getElementById("totals").innerHTML =
      `<div class="tile total"><span>${esc(t("open_total"))}</span><b data-count="open">${data.open}</b></div>` +
      SEVERITIES.map((s) => `<div class="tile sev-${s}"><span>${esc(t(s))}</span><b data-count="${s}">${data.by_severity[s]}</b></div>`).join("");
    document.getElementById("severe").innerHTML = data.severe.map((i) => `<li class="sev-${esc(i.severity)}" data-incident-id="${esc(i.incident_id)}">
        <b>${esc(i.site.name)}</b><span>${esc(i.enterprise.name)} · ${esc(i.region.name)}</span>
        <span>${esc(i.rules.map((r) => pick(r.description)).filter(Boolean).join("；"))}</span><time>${esc(time(i.opened_at))}</time></li>`).join("")
      || `<li class="empty">${esc(t("nothing_open"))}</li>`;
    document.getElementById("by-region").innerHTML = countsTable(data.by_region);
    document.getElementById("by-sector").innerHTML = countsTable(data.by_sector);
    document.getElementById("enterprises").innerHTML = data.enterprises.map((e) => `<li class="sev-${esc(e.severity)}"><span class="dot"></span>${esc(e.name)} <small>${esc(e.region)}</small></li>`).join("");
    document.getElementById("events").innerHTML = data.events.map((e) => `<li><time>${esc(time(e.at, false))}</time>
        <span class="badge sev-${esc(e.severity)}">${esc(t(e.severity))}</span>${e.rule_id === "report.public" ? ` <span class="badge report">${esc(t("kind_report"))}</span>` : ""} <b>${esc(e.site_name || e.incident_id)}</b> · ${esc(t("e_" + e.event))}
        <small>${e.departments.length > 1 ? e.departments.length + " × " : ""}${esc(e.departments.slice(0, 3).map(dept).join("、"))}${e.departments.length > 3 ? " …" : ""}</small></li>`).join("");
  }

  async function refresh() {
    data = await api("/v1/wall");
    render();
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(() => refresh().catch(() => {}), 200);
  }

  document.addEventListener("sw-lang", render);
  SW.bindChrome();
  SW.login(() => {
    refresh();
    SW.live("/v1/events", (event) => { if (event === "change") schedule(); }, (up) => {
      const el = document.getElementById("live");
      el.className = up ? "live on" : "live off";
      el.dataset.label = up ? "live" : "offline";
      el.textContent = t(el.dataset.label);
      if (up) schedule();
    });
    setInterval(() => { document.getElementById("clock").textContent = time(Date.now()); }, 1000);
    setInterval(schedule, 60000); // deadlines and clocks move on even when nothing changes
  });
})();
