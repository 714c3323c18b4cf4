// The public report form: no token; the server checks every field and answers a tracking number.
"use strict";

(() => {
  const LABELS = {
    zh: { title: "安全生产举报投诉", intro: "发现安全隐患或违法违规行为，请如实填写。可以匿名举报。", what: "发生了什么 *",
      enterprise: "涉及企业（如知道）", address: "地址（不知道企业时必填）", region: "所在区县 *", when: "发生时间 *",
      photos: "照片（可选，JPEG/PNG/WebP）", contact: "联系方式（可选）", anonymous: "匿名举报", submit: "提交举报",
      track: "查询办理进度（受理编号）", lookup: "查询", received: "已受理，受理编号：", keep: "请保存此编号，用于查询办理进度。",
      fix: "请修改标出的内容。", busy: "提交过于频繁：", dispatched: "已派发相关部门办理", linked: "已并入相关事件办理",
      unfounded: "经核查不属实", handled: "部门已确认受理", finished: "已办结", notfound: "没有这个受理编号" },
    en: { title: "Report a work-safety hazard", intro: "Report a hazard or a violation you have seen. You may stay anonymous.", what: "What happened *",
      enterprise: "Enterprise (if you know it)", address: "Address (needed if you do not know the enterprise)", region: "County or district *",
      when: "When *", photos: "Photos (optional, JPEG/PNG/WebP)", contact: "Contact (optional)", anonymous: "Report anonymously",
      submit: "Send report", track: "Look up a report (tracking number)", lookup: "Look up", received: "Received. Tracking number: ",
      keep: "Keep this number to follow your report.", fix: "Please correct the marked fields.", busy: "Too many reports: ",
      dispatched: "Passed to the departments concerned", linked: "Joined to an incident already being handled",
      unfounded: "Found unfounded", handled: "A department has taken it on", finished: "Dealt with", notfound: "No such tracking number" },
  };
  let lang = localStorage.getItem("sw-lang") || "zh";
  const t = (k) => LABELS[lang][k] || k;
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const form = document.getElementById("report");

  function applyLang() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.querySelectorAll("[data-r]").forEach((el) => { el.textContent = t(el.dataset.r); });
  }

  let tz = "Asia/Shanghai";

  // "Now" in the province's time zone (the server reads the field so), whatever the browser's zone.
  function localNow() {
    const parts = new Intl.DateTimeFormat("sv-SE", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", hour12: false }).format(new Date());
    return parts.replace(" ", "T");
  }

  async function load() {
    const options = await (await fetch("/v1/report-form")).json();
    tz = options.timezone || tz;
    form.region.innerHTML += options.regions.map((r) => `<option value="${esc(r.code)}">${esc(r.full)}</option>`).join("");
    form.enterprise_id.innerHTML += options.enterprises.map((e) => `<option value="${esc(e.id)}" data-region="${esc(e.region)}">${esc(e.name)}</option>`).join("");
    form.when.value = localNow();
  }

  form.enterprise_id.addEventListener("change", () => {
    const region = form.enterprise_id.selectedOptions[0]?.dataset.region;
    if (region) form.region.value = region;
  });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    document.querySelectorAll(".field-error").forEach((el) => { el.textContent = ""; });
    form.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
    document.getElementById("form-error").textContent = "";
    const response = await fetch("/v1/reports", { method: "POST", body: new FormData(form) });
    const body = await response.json();
    if (response.status === 201) {
      const receipt = document.getElementById("receipt");
      receipt.innerHTML = `${esc(t("received"))}<b id="tracking">${esc(body.tracking)}</b><br>${esc(t("keep"))}`;
      receipt.hidden = false;
      form.reset();
      form.when.value = localNow();
      document.getElementById("track").tracking.value = body.tracking;
    } else if (response.status === 422 && Array.isArray(body.detail)) {
      for (const e of body.detail) {
        const slot = document.querySelector(`.field-error[data-for="${e.field}"]`);
        if (slot) slot.textContent = e.message;
        form.elements[e.field]?.classList?.add("invalid");
      }
      document.getElementById("form-error").textContent = t("fix");
    } else {
      document.getElementById("form-error").textContent = response.status === 429 ? t("busy") + body.detail : String(body.detail);
    }
  });

  document.getElementById("track").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const number = ev.target.tracking.value.trim();
    const out = document.getElementById("track-result");
    const response = await fetch(`/v1/reports/${encodeURIComponent(number)}`);
    if (!response.ok) { out.textContent = t("notfound"); return; }
    const r = await response.json();
    const steps = [t(r.status)];
    if (r.status === "dispatched" && r.handled) steps.push(t("handled"));
    if (r.finished) steps.push(t("finished"));
    out.textContent = `${r.tracking}: ${steps.join(" · ")}${r.reason ? " — " + r.reason : ""}`;
  });

  document.getElementById("lang").addEventListener("click", () => { lang = lang === "zh" ? "en" : "zh"; localStorage.setItem("sw-lang", lang); applyLang(); });
  applyLang();
  load();
})();
