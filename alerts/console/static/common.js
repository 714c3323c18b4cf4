// Shared by the console and the wall: labels in two languages, the token, API calls, the live stream.
"use strict";

const SW = (() => {
  const LABELS = {
    zh: {
      title: "安全生产监测预警 · 值班台", wall_title: "安全生产监测预警 · 全省态势", wall: "大屏", report: "举报投诉", console: "值班台",
      login: "登录", token: "API 令牌", token_hint: "输入值班令牌（safewatch alerts token issue）",
      logout: "退出", bad_token: "令牌无效或已撤销", live: "实时", offline: "连接中断，重连中…",
      red: "红色", orange: "橙色", yellow: "黄色", blue: "蓝色", open_total: "未结事件",
      site: "场所", enterprise: "企业", region: "地区", sector: "行业", opened: "发生时间",
      deadline: "确认时限", overdue: "已超时", no_deadline: "已确认", action: "处置建议",
      tasks: "派单", department: "部门", status: "状态", detail: "详情", close_detail: "关闭",
      ack: "确认", assign: "指派", note: "备注", resolve: "办结", do_close: "关闭",
      ask_person: "指派给（姓名）", ask_note: "备注内容", ask_resolve: "办结说明（可选）", ask_close: "关闭说明（可选）",
      new_red: "新的红色预警！", sound: "声音", nothing_open: "当前没有未结事件",
      timeline: "时间线", hazards: "关联隐患", value: "数值", peak: "峰值", setpoint: "设定值",
      deliveries: "送达记录", audit: "处理记录", by_region: "按地区", by_sector: "按行业",
      severe: "红色/橙色事件", events: "最新动态", enterprises: "企业风险", kind_report: "举报", kind_maintenance: "仪表维护",
      report_info: "举报内容", link_report: "关联到事件", unfounded: "不实举报", ask_incident: "关联的事件编号",
      ask_reason: "理由", refused: "无权限或状态不允许", escalated_to: "升级级别",
      s_new: "新建", s_delivered: "已送达", s_escalated: "已升级", s_acknowledged: "已确认",
      s_in_progress: "处置中", s_resolved: "已办结", s_closed: "已关闭", s_open: "进行中", s_update: "更新", s_closed_inc: "险情已解除", s_all_clear: "报警已全部消除，观察中",
      e_created: "新建派单", e_delivered: "已送达", e_revision: "事件更新", e_escalated: "超时升级", e_acknowledged: "已确认",
      e_assigned: "已指派", e_note: "备注", e_resolved: "已办结", e_closed: "已关闭", e_handed_over: "已转交", e_held: "暂缓通知", e_released: "恢复通知",
      role_admin: "管理员", role_duty_officer: "值班员", role_inspector: "监察员", role_enterprise: "企业操作员",
    },
    en: {
      title: "Work-safety monitoring · Duty console", wall_title: "Work-safety monitoring · The province at a glance", wall: "Wall", report: "Report a hazard", console: "Console",
      login: "Log in", token: "API token", token_hint: "Paste your duty token (safewatch alerts token issue)",
      logout: "Log out", bad_token: "Token not valid or revoked", live: "Live", offline: "Disconnected, reconnecting…",
      red: "Red", orange: "Orange", yellow: "Yellow", blue: "Blue", open_total: "Open incidents",
      site: "Site", enterprise: "Enterprise", region: "Region", sector: "Sector", opened: "Opened",
      deadline: "Acknowledge within", overdue: "Overdue", no_deadline: "Acknowledged", action: "Recommended action",
      tasks: "Tasks", department: "Department", status: "Status", detail: "Details", close_detail: "Close",
      ack: "Acknowledge", assign: "Assign", note: "Note", resolve: "Resolve", do_close: "Close",
      ask_person: "Assign to (name)", ask_note: "Note", ask_resolve: "Resolution note (optional)", ask_close: "Closing note (optional)",
      new_red: "New red incident!", sound: "Sound", nothing_open: "Nothing open",
      timeline: "Timeline", hazards: "Linked hazards", value: "Value", peak: "Peak", setpoint: "Set point",
      deliveries: "Deliveries", audit: "Trail", by_region: "By region", by_sector: "By sector",
      severe: "Red / orange incidents", events: "Latest events", enterprises: "Enterprises by risk", kind_report: "Report", kind_maintenance: "Maintenance",
      report_info: "The report", link_report: "Link to incident", unfounded: "Unfounded", ask_incident: "Incident id to link to",
      ask_reason: "Reason", refused: "Not allowed, or not in this state", escalated_to: "Escalation level",
      s_new: "new", s_delivered: "delivered", s_escalated: "escalated", s_acknowledged: "acknowledged",
      s_in_progress: "in progress", s_resolved: "resolved", s_closed: "closed", s_open: "open", s_update: "updated", s_closed_inc: "all clear", s_all_clear: "all clear, watching",
      e_created: "task created", e_delivered: "delivered", e_revision: "incident updated", e_escalated: "escalated", e_acknowledged: "acknowledged",
      e_assigned: "assigned", e_note: "note", e_resolved: "resolved", e_closed: "closed", e_handed_over: "handed over", e_held: "message held", e_released: "message released",
      role_admin: "admin", role_duty_officer: "duty officer", role_inspector: "inspector", role_enterprise: "enterprise operator",
    },
  };
  let lang = localStorage.getItem("sw-lang") || "zh";
  let tz = "Asia/Shanghai";

  const t = (key) => (LABELS[lang] && LABELS[lang][key]) || key;
  const pick = (texts) => (texts ? texts[lang] || texts.zh || "" : "");
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  function setLang(next) {
    lang = next;
    localStorage.setItem("sw-lang", next);
    document.documentElement.lang = next === "zh" ? "zh-CN" : "en";
    document.querySelectorAll("[data-label]").forEach((el) => { el.textContent = t(el.dataset.label); });
    document.querySelectorAll("[data-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.placeholder); });
  }

  function time(ms, withDate = true) {
    if (ms == null) return "";
    const opts = { timeZone: tz, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
    if (withDate) Object.assign(opts, { month: "2-digit", day: "2-digit" });
    return new Intl.DateTimeFormat(lang === "zh" ? "zh-CN" : "en-GB", opts).format(new Date(ms));
  }

  function countdown(deadline, now) {
    const left = Math.round((deadline - now) / 1000);
    const abs = Math.abs(left);
    const text = `${Math.floor(abs / 60)}:${String(abs % 60).padStart(2, "0")}`;
    return left >= 0 ? { text, overdue: false } : { text: `${t("overdue")} ${text}`, overdue: true };
  }

  // Department names read "English name (中文名)": show the part of the current language.
  function dept(name) {
    const m = /^(.*?)\s*\(([^()]+)\)$/.exec(name || "");
    if (!m) return name || "";
    return lang === "zh" ? m[2] : m[1];
  }

  const token = () => sessionStorage.getItem("sw-token");

  async function api(path, options = {}) {
    const headers = Object.assign({ Authorization: `Bearer ${token()}` }, options.headers || {});
    if (options.body && typeof options.body !== "string" && !(options.body instanceof FormData)) {
      options = Object.assign({}, options, { body: JSON.stringify(options.body) });
      headers["Content-Type"] = "application/json";
    }
    const response = await fetch(path, Object.assign({}, options, { headers }));
    if (response.status === 401) { logout(); throw new Error("401"); }
    const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
    if (!response.ok) {
      const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : response.status;
      throw new Error(String(detail));
    }
    return body;
  }

  // Log in: check the token against /v1/me, keep it in this tab's sessionStorage only.
  async function login(onReady) {
    const dialog = document.getElementById("login");
    const form = document.getElementById("login-form");
    const error = document.getElementById("login-error");
    async function tryToken() {
      try {
        const me = await api("/v1/me");
        tz = me.timezone || tz;
        dialog.hidden = true;
        document.getElementById("me").textContent = `${me.name} · ${t("role_" + me.role)}`;
        onReady(me);
        return true;
      } catch (e) {
        return false;
      }
    }
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      sessionStorage.setItem("sw-token", form.token.value.trim());
      error.textContent = "";
      if (!(await tryToken())) { sessionStorage.removeItem("sw-token"); error.textContent = t("bad_token"); }
    });
    if (!token() || !(await tryToken())) dialog.hidden = false;
  }

  function logout() {
    sessionStorage.removeItem("sw-token");
    location.reload();
  }

  // Server-sent events over fetch (EventSource cannot send the Authorization header), reconnecting.
  function live(path, onEvent, onState) {
    let stopped = false;
    async function run() {
      while (!stopped) {
        try {
          const response = await fetch(path, { headers: { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" } });
          if (response.status === 401) { logout(); return; }
          if (!response.ok) throw new Error(String(response.status));
          onState(true);
          const reader = response.body.getReader();
          const decoder = new TextDecoder();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += decoder.decode(value, { stream: true });
            let cut;
            while ((cut = buffer.indexOf("\n\n")) >= 0) {
              const block = buffer.slice(0, cut);
              buffer = buffer.slice(cut + 2);
              let event = "message", data = "";
              for (const line of block.split("\n")) {
                if (line.startsWith("event: ")) event = line.slice(7);
                else if (line.startsWith("data: ")) data += line.slice(6);
              }
              if (data) onEvent(event, JSON.parse(data));
            }
          }
        } catch (e) { /* reconnect below */ }
        onState(false);
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
    run();
    return () => { stopped = true; };
  }

  function bindChrome() {
    document.getElementById("lang")?.addEventListener("click", () => { setLang(lang === "zh" ? "en" : "zh"); document.dispatchEvent(new Event("sw-lang")); });
    document.getElementById("logout")?.addEventListener("click", logout);
    setLang(lang);
  }

  return { t, pick, esc, dept, time, countdown, api, login, live, bindChrome, setLang, get lang() { return lang; }, get tz() { return tz; } };
})();
