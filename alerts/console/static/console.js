// The duty console: open incidents, live; buttons call the task API with the logged-in token.
"use strict";

(() => {
  const { t, pick, esc, dept, time, countdown, api } = SW;
  const SEVERITIES = ["red", "orange", "yellow", "blue"];
  const UNACKED = ["new", "delivered", "escalated"];
  let items = [];
  let clockSkew = 0; // server time minus this browser's time
  let seen = null; // incident ids already shown (null until the first load)
  let openDetail = null;
  let refreshTimer = null;

  const now = () => Date.now() + clockSkew;

  function toast(text, bad = false) {
    const el = document.getElementById("toast");
    el.textContent = text;
    el.className = bad ? "toast bad" : "toast";
    el.hidden = false;
    clearTimeout(el._timer);
    el._timer = setTimeout(() => { el.hidden = true; }, 4000);
  }

  // A new red incident: a banner that flashes until clicked, and a beep if sound is on.
  function alarm(item) {
    const el = document.getElementById("alarm");
    el.innerHTML = `${esc(t("new_red"))} ${esc(item.site.name)} · ${esc(item.enterprise.name)}`;
    el.dataset.incidentId = item.incident_id;
    el.hidden = false;
    el.onclick = () => { el.hidden = true; showDetail(item.incident_id); };
    if (document.getElementById("sound").checked) beep();
  }

  function beep() {
    try {
      const ctx = new AudioContext();
      const osc = ctx.createOscillator();
      osc.frequency.value = 880;
      osc.connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.6);
    } catch (e) { /* no audio device */ }
  }

  function taskButtons(task) {
    if (!task.may_act) return "";
    const can = {
      ack: UNACKED.includes(task.status),
      assign: ["acknowledged", "in_progress"].includes(task.status),
      note: task.status !== "closed",
      resolve: ["acknowledged", "in_progress"].includes(task.status),
      close: task.status === "resolved",
    };
    return Object.entries(can)
      .filter(([, ok]) => ok)
      .map(([action]) => `<button type="button" class="act act-${action}" data-action="${action}" data-task-id="${esc(task.task_id)}">${esc(t(action === "close" ? "do_close" : action))}</button>`)
      .join("");
  }

  function taskRow(task) {
    const who = task.assignee || task.acknowledged_by || "";
    return `<tr class="task" data-task-id="${esc(task.task_id)}" data-status="${esc(task.status)}">
      <td title="${esc(task.department_name)}">${esc(dept(task.department_name))}</td>
      <td class="status s-${esc(task.status)}">${esc(t("s_" + task.status))}${task.escalation_level ? ` ↑${task.escalation_level}` : ""}</td>
      <td>${UNACKED.includes(task.status) ? `<span class="countdown" data-deadline="${task.ack_deadline}"></span>` : esc(who)}</td>
      <td class="buttons">${taskButtons(task)}</td></tr>`;
  }

  function card(item) {
    const rules = item.rules.map((r) => `<div class="rule"><b>${esc(pick(r.description) || r.id)}</b>
      <div class="advice"><span>${esc(t("action"))}:</span> ${esc(pick(r.action))}</div></div>`).join("");
    const deadline = item.next_deadline != null
      ? `<span class="countdown big" data-deadline="${item.next_deadline}"></span>`
      : `<span class="acked">${esc(t("no_deadline"))}</span>`;
    return `<article class="incident sev-${esc(item.severity)}" data-incident-id="${esc(item.incident_id)}" data-severity="${esc(item.severity)}" data-kind="${esc(item.kind)}">
      <div class="head">
        <span class="badge sev-${esc(item.severity)}">${esc(t(item.severity))}</span>
        ${item.kind === "report" || item.kind === "maintenance" ? `<span class="badge report">${esc(t("kind_" + item.kind))}</span>` : ""}
        <h2>${esc(item.site.name || item.title)}</h2>
        <div class="deadline"><small>${esc(t("deadline"))}</small> ${deadline}</div>
      </div>
      <dl class="where">
        <div><dt>${esc(t("enterprise"))}</dt><dd>${esc(item.enterprise.name || "—")}</dd></div>
        <div><dt>${esc(t("region"))}</dt><dd>${esc(item.region.full)}</dd></div>
        <div><dt>${esc(t("sector"))}</dt><dd>${esc(pick(item.sector))}</dd></div>
        <div><dt>${esc(t("opened"))}</dt><dd>${esc(time(item.opened_at))}</dd></div>
        <div><dt>${esc(t("status"))}</dt><dd>${esc(t(item.status === "closed" ? "s_closed_inc" : item.all_clear ? "s_all_clear" : "s_" + item.status))}</dd></div>
      </dl>
      ${rules}
      <table class="tasks"><tbody>${item.tasks.map(taskRow).join("")}</tbody></table>
      <button type="button" class="more" data-detail="${esc(item.incident_id)}">${esc(t("detail"))}</button>
    </article>`;
  }

  function render() {
    // Maintenance notices are listed but not counted as incidents: the colours say how many situations.
    const incidents = items.filter((i) => i.kind !== "maintenance");
    const counts = Object.fromEntries(SEVERITIES.map((s) => [s, incidents.filter((i) => i.severity === s).length]));
    const upkeep = items.length - incidents.length;
    document.getElementById("counts").innerHTML =
      `<span class="count total">${esc(t("open_total"))} <b>${incidents.length}</b></span>` +
      SEVERITIES.map((s) => `<span class="count sev-${s}" data-count="${s}">${esc(t(s))} <b>${counts[s]}</b></span>`).join("") +
      (upkeep ? `<span class="count maintenance" data-count="maintenance">${esc(t("kind_maintenance"))} <b>${upkeep}</b></span>` : "");
    const board = document.getElementById("board");
    board.innerHTML = items.length ? items.map(card).join("") : `<p class="empty">${esc(t("nothing_open"))}</p>`;
    tick();
  }

  function tick() {
    const n = now();
    document.getElementById("clock").textContent = time(n);
    document.querySelectorAll(".countdown").forEach((el) => {
      const c = countdown(Number(el.dataset.deadline), n);
      el.textContent = c.text;
      el.classList.toggle("overdue", c.overdue);
    });
  }

  async function refresh() {
    const data = await api("/v1/board");
    clockSkew = data.now - Date.now();
    items = data.items;
    const fresh = seen === null ? [] : items.filter((i) => !seen.has(i.incident_id) && i.severity === "red");
    seen = new Set(items.map((i) => i.incident_id));
    render();
    if (fresh.length) alarm(fresh[0]);
    if (openDetail) showDetail(openDetail);
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => refresh().catch((e) => toast(e.message, true)), 150);
  }

  const ACTIONS = {
    ack: () => ({ path: "ack", body: {} }),
    assign: () => { const p = prompt(t("ask_person")); return p ? { path: "assign", body: { person: p } } : null; },
    note: () => { const p = prompt(t("ask_note")); return p ? { path: "notes", body: { text: p } } : null; },
    resolve: () => { const p = prompt(t("ask_resolve")); return p === null ? null : { path: "resolve", body: p ? { note: p } : {} }; },
    close: () => { const p = prompt(t("ask_close")); return p === null ? null : { path: "close", body: p ? { note: p } : {} }; },
  };

  async function act(button) {
    const call = ACTIONS[button.dataset.action]();
    if (!call) return;
    button.disabled = true;
    try {
      await api(`/tasks/${encodeURIComponent(button.dataset.taskId)}/${call.path}`, { method: "POST", body: call.body });
      toast(`${t(button.dataset.action === "close" ? "do_close" : button.dataset.action)} ✓`);
    } catch (e) {
      toast(`${t("refused")}: ${e.message}`, true);
    }
    scheduleRefresh();
  }

  async function decideReport(tracking, how) {
    const body = { reason: prompt(t("ask_reason")) || "" };
    if (!body.reason) return;
    if (how === "link") {
      body.incident_id = prompt(t("ask_incident")) || "";
      if (!body.incident_id) return;
    }
    try {
      await api(`/v1/reports/${encodeURIComponent(tracking)}/${how === "link" ? "link" : "unfounded"}`, { method: "POST", body });
      toast("✓");
    } catch (e) {
      toast(`${t("refused")}: ${e.message}`, true);
    }
    scheduleRefresh();
  }

  async function showDetail(incidentId) {
    openDetail = incidentId;
    const panel = document.getElementById("detail");
    let d;
    try {
      d = await api(`/v1/incidents/${encodeURIComponent(incidentId)}/detail`);
    } catch (e) {
      panel.innerHTML = `<p class="error">${esc(e.message)}</p>`;
      panel.hidden = false;
      return;
    }
    const timeline = d.timeline.map((e) => `<li><time>${esc(time(e.ts))}</time> ${esc(e.what)}</li>`).join("");
    const hazards = d.hazards.map((h) => `<div class="hazard sev-${esc(h.severity)}">
        <b>${esc(h.kind)} · ${esc(h.sensor_id)}</b> <small>${esc(h.rule_id || "")}</small>
        <div>${esc(t("value"))} ${h.value ?? "—"} · ${esc(t("peak"))} ${h.peak ?? "—"} · ${esc(t("setpoint"))} ${h.threshold ?? "—"}
          · ${esc(time(h.start))}${h.end ? " – " + esc(time(h.end)) : ""}</div>
        ${SWChart.svg(h.readings, h.threshold, h.start, h.end, (ms) => time(ms, false))}</div>`).join("");
    const tasks = d.tasks.map((task) => `<details class="task-history"><summary>${esc(dept(task.department_name))} — ${esc(t("s_" + task.status))}</summary>
        <h4>${esc(t("audit"))}</h4><ul>${task.audit.map((a) => `<li><time>${esc(time(a.at))}</time> ${esc(t("e_" + a.event))} → ${esc(t("s_" + a.to_status))} · ${esc(a.actor)}${a.detail ? " · " + esc(a.detail) : ""}</li>`).join("")}</ul>
        <h4>${esc(t("deliveries"))}</h4><ul>${task.deliveries.map((x) => `<li><time>${esc(time(x.at))}</time> #${x.attempt} ${x.ok ? "✓" : "✗"} ${esc(x.http_status ?? "")} ${esc(x.error ?? "")}</li>`).join("")}</ul></details>`).join("");
    const report = d.report ? `<h3>${esc(t("report_info"))} ${esc(d.report.tracking)}</h3>
        <p class="report-text">${esc(d.report.what)}</p>
        <div class="photos">${Array.from({ length: d.report.photos }, (_, i) => `<img alt="" data-photo="/v1/reports/${encodeURIComponent(d.report.tracking)}/photos/${i}">`).join("")}</div>
        <p>${esc(d.report.address || "")} · ${esc(time(d.report.happened_at))} · ${esc(d.report.contact || "—")} · ${esc(d.report.status)}${d.report.reason ? " · " + esc(d.report.reason) : ""}</p>
        ${d.report.status === "dispatched" ? `<button type="button" data-report="${esc(d.report.tracking)}" data-how="link">${esc(t("link_report"))}</button>
        <button type="button" data-report="${esc(d.report.tracking)}" data-how="unfounded">${esc(t("unfounded"))}</button>` : ""}` : "";
    panel.innerHTML = `<button type="button" class="close" data-close>${esc(t("close_detail"))} ✕</button>
      <h2 class="sev-text-${esc(d.severity)}">${esc(d.site.name || d.title)}</h2>
      <p>${esc(d.enterprise.name)} · ${esc(d.region.full)} · ${esc(d.incident_id)}</p>
      ${d.summary ? `<p class="summary">${esc(d.summary)}</p>` : ""}
      ${report}
      <h3>${esc(t("timeline"))}</h3><ul class="timeline">${timeline}</ul>
      <h3>${esc(t("hazards"))}</h3>${d.hazards_error ? `<p class="error">${esc(d.hazards_error)}</p>` : ""}${hazards}
      <h3>${esc(t("tasks"))}</h3>${tasks}`;
    panel.hidden = false;
    // <img src> cannot send the token: fetch each photo with it and show the bytes.
    panel.querySelectorAll("img[data-photo]").forEach(async (img) => {
      const response = await fetch(img.dataset.photo, { headers: { Authorization: `Bearer ${sessionStorage.getItem("sw-token")}` } });
      if (response.ok) img.src = URL.createObjectURL(await response.blob());
    });
  }

  document.addEventListener("click", (ev) => {
    const target = ev.target.closest("button");
    if (!target) return;
    if (target.dataset.action) act(target);
    else if (target.dataset.detail) showDetail(target.dataset.detail);
    else if (target.dataset.report) decideReport(target.dataset.report, target.dataset.how);
    else if (target.hasAttribute("data-close")) { openDetail = null; document.getElementById("detail").hidden = true; }
  });
  document.addEventListener("sw-lang", () => { render(); if (openDetail) showDetail(openDetail); });

  SW.bindChrome();
  SW.login(() => {
    refresh().catch((e) => toast(e.message, true));
    SW.live("/v1/events", (event) => { if (event === "change") scheduleRefresh(); }, (up) => {
      const el = document.getElementById("live");
      el.className = up ? "live on" : "live off";
      el.dataset.label = up ? "live" : "offline";
      el.textContent = t(el.dataset.label);
      if (up) scheduleRefresh(); // whatever changed while the stream was down
    });
    setInterval(tick, 1000);
  });
})();
