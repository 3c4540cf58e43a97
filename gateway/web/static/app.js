// Langerhans web UI: a hash-routed single page. Views: sign-in, people (caregiver view), and per
// person live / alerts / AGP report / settings. Every value shown comes from the API; what the
// API cannot give yet is shown as "unavailable", never as a made-up number.

import { ApiError, api, currentSession, optional, signIn, signOut } from "./api.js";
import { drawGlucoseChart, rangeClass } from "./chart.js";
import { openLiveFeed } from "./live.js";

const params = new URLSearchParams(location.search);
// Poll interval for live data when no stream is available (tests shorten it with ?poll_s=).
export const POLL_MS = Math.max(1, Number(params.get("poll_s")) || 30) * 1000;
const STALE_MIN = 12; // no dosing decision trusts an older reading; the UI flags it too

const PATHS = {
  people: "/api/v1/people",
  glucose: (id, q) => `/api/v1/people/${id}/glucose?${q}`,
  forecast: (id) => `/api/v1/people/${id}/forecast`,
  loop: (id) => `/api/v1/people/${id}/loop-status`,
  alerts: (id, state) => `/api/v1/people/${id}/alerts?state=${state}&limit=50`,
  ack: (id, alertId) => `/api/v1/people/${id}/alerts/${alertId}/acknowledge`,
  agp: (id, ext, q) => `/api/v1/people/${id}/reports/agp${ext}?${q}`,
  settings: (id) => `/api/v1/people/${id}/therapy-settings`,
  history: (id) => `/api/v1/people/${id}/therapy-settings/history?limit=10`,
};

const ARROWS = {
  DoubleUp: "⇈", SingleUp: "↑", FortyFiveUp: "↗", Flat: "→", FortyFiveDown: "↘",
  SingleDown: "↓", DoubleDown: "⇊",
};

// ------------------------------------------------------------------ tiny DOM helpers
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function errorBox(e) {
  const box = h("div", { class: "error", role: "alert" }, e.message || String(e));
  if (e instanceof ApiError && Array.isArray(e.details) && e.details.length) {
    box.append(h("ul", {}, e.details.map((d) =>
      h("li", {}, `${(d.loc || []).filter((p) => p !== "body").join(" › ")}: ${d.msg}`))));
  }
  return box;
}

const unavailable = (why) => h("span", { class: "unavailable", title: why || "" }, "unavailable");

function ageText(time) {
  const min = Math.floor((Date.now() - time.getTime()) / 60000);
  if (min < 1) return "just now";
  if (min < 60) return `${min} min ago`;
  return `${Math.floor(min / 60)} h ${min % 60} min ago`;
}

const fmtDateTime = (d) => d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });

// ------------------------------------------------------------------ routing
let teardown = [];
function onLeave(fn) { teardown.push(fn); }

function setNav(personId, active) {
  const nav = document.getElementById("nav");
  nav.replaceChildren();
  const session = currentSession();
  if (!session) return;
  nav.append(h("a", { href: "#/people", "aria-current": active === "people" ? "page" : null },
    "People"));
  if (personId) {
    for (const [key, label] of [["live", "Live"], ["alerts", "Alerts"], ["agp", "AGP report"],
      ["settings", "Settings"]]) {
      nav.append(h("a", { href: `#/${key}/${personId}`,
        "aria-current": active === key ? "page" : null }, label));
    }
  }
  nav.append(h("span", { class: "spacer" }));
  nav.append(h("button", { type: "button", id: "signout", onclick: async () => {
    await signOut();
    location.hash = "#/signin";
  } }, `Sign out (${session.me?.display_name ?? ""})`));
}

async function route() {
  teardown.forEach((fn) => fn());
  teardown = [];
  const view = document.getElementById("view");
  const [, page = "", id = ""] = location.hash.split("/");
  if (!currentSession() && page !== "signin") {
    location.hash = "#/signin";
    return;
  }
  const views = { signin: signInView, people: peopleView, live: liveView, alerts: alertsView,
    agp: agpView, settings: settingsView };
  const render = views[page] || homeView;
  setNav(id ? decodeURIComponent(id) : null, page);
  try {
    await render(view, decodeURIComponent(id));
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      location.hash = "#/signin";
      return;
    }
    view.replaceChildren(errorBox(e));
  }
}

async function homeView() {
  const people = await api(PATHS.people);
  const self = people.find((p) => p.relation === "self");
  location.hash = self && people.length === 1 ? `#/live/${self.person_id}` : "#/people";
}

// ------------------------------------------------------------------ sign-in
async function signInView(view) {
  const message = h("div");
  const form = h("form", { class: "signin card", novalidate: true },
    h("h1", {}, "Sign in"),
    h("label", {}, "E-mail", h("input", { name: "email", type: "email", autocomplete: "username",
      required: true })),
    h("label", {}, "Password", h("input", { name: "password", type: "password",
      autocomplete: "current-password", required: true })),
    message,
    h("button", { class: "primary", type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    message.replaceChildren();
    try {
      await signIn(form.email.value, form.password.value);
      location.hash = "#/";
    } catch (e) {
      message.replaceChildren(errorBox(e));
    }
  });
  view.replaceChildren(form);
  form.email.focus();
}

// ------------------------------------------------------------------ glucose helpers
function toReading(r) {
  return { id: r.record_id, time: new Date(r.time), mgDl: r.glucose_mg_dl, trend: r.trend };
}

async function recentReadings(personId, hours, limit = 1000) {
  const start = new Date(Date.now() - hours * 3600e3).toISOString();
  const q = new URLSearchParams({ start, limit: String(limit) });
  const page = await api(PATHS.glucose(personId, q));
  return page.readings.map(toReading); // newest first
}

function currentBlock(latest) {
  if (!latest) return h("div", { class: "current" }, h("span", { class: "muted" }, "No reading in the last hours"));
  const ageMin = (Date.now() - latest.time.getTime()) / 60000;
  const stale = ageMin > STALE_MIN;
  return h("div", { class: "current", "data-testid": "current" },
    h("span", { class: `value ${stale ? "" : rangeClass(latest.mgDl)}`, "data-testid": "current-value" },
      latest.mgDl),
    h("span", { class: "arrow", title: latest.trend || "trend unknown" },
      ARROWS[latest.trend] || "?"),
    h("span", { class: "unit" }, "mg/dL"),
    h("span", { class: stale ? "stale" : "muted", "data-testid": "current-age" },
      stale ? `stale: ${ageText(latest.time)}` : ageText(latest.time)));
}

// ------------------------------------------------------------------ people (caregiver view)
async function peopleView(view) {
  const people = await api(PATHS.people);
  const grid = h("div", { class: "grid" });
  view.replaceChildren(h("h1", {}, "People"), people.length ? grid :
    h("p", { class: "muted" }, "Nobody shares their data with you yet."));
  const cards = new Map();
  for (const p of people) {
    const body = h("div", {}, h("span", { class: "muted" }, "…"));
    const card = h("article", { class: "card person", "data-person": p.person_id },
      h("a", { href: `#/live/${p.person_id}` },
        h("h2", {}, p.display_name, " ", h("span", { class: "badge" }, p.relation)), body));
    grid.append(card);
    cards.set(p.person_id, body);
  }
  const refresh = async () => {
    await Promise.all(people.map(async (p) => {
      const body = cards.get(p.person_id);
      if (!p.permissions.includes("view")) {
        body.replaceChildren(h("span", { class: "muted" }, "no view permission"));
        return;
      }
      try {
        const [latest] = await recentReadings(p.person_id, 6, 1);
        body.replaceChildren(currentBlock(latest));
      } catch (e) {
        body.replaceChildren(errorBox(e));
      }
    }));
  };
  await refresh();
  const timer = setInterval(refresh, POLL_MS);
  onLeave(() => clearInterval(timer));
}

// ------------------------------------------------------------------ live view
function statusList(loop, forecast) {
  const dl = h("dl", { class: "status", "data-testid": "status" });
  const row = (label, value) => dl.append(h("dt", {}, label), h("dd", {}, value));
  const num = (v, unit, digits) => (typeof v === "number" ? `${v.toFixed(digits)} ${unit}` : unavailable());
  const s = loop.data;
  const f = forecast.data && forecast.data.available ? forecast.data : null;
  // IOB/COB: the loop status has them once the engine decided; the forecast as a fallback.
  row("Insulin on board", num(s?.iob_u ?? f?.iob_u, "U", 2));
  row("Carbs on board", num(s?.cob_g ?? f?.cob_g, "g", 0));
  if (!s) {
    row("Loop", unavailable(loop.unavailable));
    row("Pump", unavailable(loop.unavailable));
    return dl;
  }
  row("Loop", h("span", { class: s.looping ? "" : "stale" }, `${s.looping ? "looping" : "not looping"} · ${s.mode}`));
  if (!s.looping && s.summary) row("Why", s.summary);
  if (s.last_decision_at) row("Last decision", ageText(new Date(s.last_decision_at)));
  if (typeof s.eventual_glucose_mg_dl === "number") row("Eventual", `${s.eventual_glucose_mg_dl.toFixed(0)} mg/dL`);
  const d = s.device;
  if (!d) {
    row("Pump", unavailable(s.device_note || "no device status"));
    return dl;
  }
  row("Hub", d.hub_connected ? "connected" : `offline${d.hub_last_seen_at ? `, seen ${ageText(new Date(d.hub_last_seen_at))}` : ""}`);
  row("Pump", d.pump_suspended === null ? unavailable() : d.pump_suspended ? "suspended" : "running");
  row("Reservoir", num(d.reservoir_u, "U", 0));
  row("Pump battery", num(d.battery_pct, "%", 0));
  if (d.summary) row("Devices", d.summary);
  return dl;
}

function forecastPoints(f) {
  if (!f || !f.available || !Array.isArray(f.lines) || !f.lines.length) return null;
  const line = f.lines.find((l) => l.kind === "COMBINED") || f.lines[0];
  const t0 = new Date(line.start_time).getTime();
  return line.glucose_mg_dl.map((v, i) => ({ time: new Date(t0 + i * line.interval_min * 60e3), mgDl: v }));
}

async function liveView(view, personId) {
  let hours = Number(sessionStorage.getItem("langerhans.hours")) || 3;
  let readings = [];
  let forecast = null;
  const canvas = h("canvas", { class: "chart", "data-testid": "chart", role: "img",
    "aria-label": "glucose chart" });
  const current = h("div");
  const status = h("div");
  const feedInfo = h("p", { class: "hint", "data-testid": "feed" });
  const forecastNote = h("p", { class: "hint" });
  const seg = h("div", { class: "seg", role: "group", "aria-label": "window" });
  for (const hh of [3, 6]) {
    seg.append(h("button", { type: "button", "aria-pressed": String(hh === hours), onclick: () => {
      hours = hh;
      sessionStorage.setItem("langerhans.hours", String(hh));
      seg.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b.textContent === `${hh} h`)));
      loadAll();
    } }, `${hh} h`));
  }
  const people = await api(PATHS.people);
  const who = people.find((p) => p.person_id === personId);
  view.replaceChildren(
    h("h1", {}, who ? who.display_name : "Live"),
    h("div", { class: "live" },
      h("section", { class: "card" }, current,
        h("div", { class: "actions" }, seg, forecastNote), canvas, feedInfo),
      h("section", { class: "card" }, h("h2", {}, "Status"), status)));

  const draw = () => {
    const now = new Date();
    const from = new Date(now.getTime() - hours * 3600e3);
    const horizonEnd = forecast && forecast.length ? forecast[forecast.length - 1].time : now;
    const to = new Date(Math.max(now.getTime() + 15 * 60e3, Math.min(horizonEnd.getTime(), now.getTime() + 3 * 3600e3)));
    drawGlucoseChart(canvas, { readings, forecast, from, to });
    canvas.dataset.readings = String(readings.length);
    canvas.dataset.latest = readings[0] ? String(readings[0].mgDl) : "";
    current.replaceChildren(currentBlock(readings[0]));
  };
  const loadReadings = async () => { readings = await recentReadings(personId, hours); };
  const loadSide = async () => {
    const [f, loop] = await Promise.all([optional(PATHS.forecast(personId)), optional(PATHS.loop(personId))]);
    forecast = f.data ? forecastPoints(f.data) : null;
    forecastNote.textContent = forecast ? "dashed: forecast" : "forecast unavailable";
    status.replaceChildren(statusList(loop, f));
  };
  const loadAll = async () => {
    try {
      await Promise.all([loadReadings(), loadSide()]);
      draw();
    } catch (e) {
      current.replaceChildren(errorBox(e));
    }
  };
  await loadAll();
  const onResize = () => draw();
  window.addEventListener("resize", onResize);
  onLeave(() => window.removeEventListener("resize", onResize));
  const feed = openLiveFeed(personId, {
    pollMs: POLL_MS,
    poll: loadAll,
    onReading: (r) => {
      const reading = toReading(r);
      if (!readings.some((x) => x.id === reading.id)) {
        readings = [reading, ...readings].sort((a, b) => b.time - a.time);
        draw();
      }
    },
    onEvent: () => loadSide().then(draw).catch(() => {}),
    onMode: (mode) => { feedInfo.textContent = mode === "stream" ? "live: stream" : `live: polling every ${POLL_MS / 1000} s`; feedInfo.dataset.mode = mode; },
  });
  onLeave(() => feed.close());
  // Keep the age text honest even when nothing new arrives.
  const ageTimer = setInterval(() => current.replaceChildren(currentBlock(readings[0])), 30000);
  onLeave(() => clearInterval(ageTimer));
}

// ------------------------------------------------------------------ alerts
async function alertsView(view, personId) {
  const box = h("div");
  view.replaceChildren(h("h1", {}, "Alerts"), box);
  const load = async () => {
    const res = await optional(PATHS.alerts(personId, "all"));
    if (res.unavailable) {
      box.replaceChildren(h("p", { class: "card", "data-testid": "alerts-unavailable" },
        "Alerts are unavailable: ", unavailable(res.unavailable)));
      return;
    }
    const list = res.data.alerts || [];
    if (!list.length) {
      box.replaceChildren(h("p", { class: "card muted" }, "No alerts."));
      return;
    }
    const body = h("tbody");
    for (const a of list) {
      const acked = Boolean(a.acknowledged_at || a.resolved_at);
      const button = acked ? h("span", { class: "muted" }, a.state || "acknowledged") :
        h("button", { class: "small primary", type: "button", "data-testid": "ack", onclick: async () => {
          button.disabled = true;
          try {
            await api(PATHS.ack(personId, a.alert_id), { method: "POST", body: { note: "" } });
            await load();
          } catch (e) {
            button.disabled = false;
            box.prepend(errorBox(e));
          }
        } }, "Acknowledge");
      body.append(h("tr", { class: `alert ${a.severity || ""} ${acked ? "acknowledged" : ""}`,
        "data-alert": a.alert_id },
        h("td", {}, h("strong", {}, a.title), h("div", { class: "hint" }, a.message)),
        h("td", {}, a.severity || ""),
        h("td", {}, a.raised_at ? fmtDateTime(new Date(a.raised_at)) : ""),
        h("td", {}, a.state || ""),
        h("td", {}, button)));
    }
    box.replaceChildren(h("div", { class: "card" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Alert", "Severity", "Raised", "State", ""].map((t) => h("th", {}, t)))),
      body)));
  };
  await load();
  const timer = setInterval(() => load().catch(() => {}), POLL_MS);
  onLeave(() => clearInterval(timer));
}

// ------------------------------------------------------------------ AGP report
async function agpView(view, personId) {
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const q = new URLSearchParams({ days: "14", tz });
  view.replaceChildren(h("h1", {}, "AGP report (14 days)"), h("p", { class: "muted" }, "Loading…"));
  const [report, png] = await Promise.all([
    api(PATHS.agp(personId, "", q)),
    api(PATHS.agp(personId, ".png", q), { as: "blob" }),
  ]);
  const m = report.metrics;
  const pct = (v) => (v === null ? "–" : `${v.toFixed(1)} %`);
  const mg = (v) => (v === null ? "–" : `${v.toFixed(0)} mg/dL`);
  const rows = [
    ["Time in range 70–180", pct(m.tir_pct), "> 70 %"],
    ["Time below 70", pct(m.tbr70_pct), "< 4 %"],
    ["Time below 54", pct(m.tbr54_pct), "< 1 %"],
    ["Time above 180", pct(m.tar180_pct), "< 25 %"],
    ["Time above 250", pct(m.tar250_pct), "< 5 %"],
    ["Mean glucose", mg(m.mean_mg_dl), ""],
    ["Standard deviation", mg(m.sd_mg_dl), ""],
    ["Coefficient of variation", pct(m.cv_pct), "≤ 36 %"],
    ["GMI", pct(m.gmi_pct), ""],
    ["Time CGM active", pct(m.coverage_pct), "≥ 70 %"],
  ];
  const imgUrl = URL.createObjectURL(png);
  onLeave(() => URL.revokeObjectURL(imgUrl));
  const pdfButton = h("button", { type: "button", class: "small", onclick: async () => {
    const pdf = await api(PATHS.agp(personId, ".pdf", q), { as: "blob" });
    const url = URL.createObjectURL(pdf);
    const a = h("a", { href: url, download: `agp-${report.start.slice(0, 10)}.pdf` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } }, "Download PDF");
  const period = `${new Date(report.start).toLocaleDateString()} – ${new Date(report.end).toLocaleDateString()}`;
  view.replaceChildren(...[
    h("h1", {}, `AGP report: ${report.display_name}`),
    h("p", { class: "muted" }, `${period} · ${report.days} days · ${report.timezone} · ${m.readings} readings `, pdfButton),
    m.sufficient_data ? null : h("p", { class: "error" }, "CGM active for less than 70 % of the period: interpret with care."),
    h("div", { class: "live agp" },
      h("section", { class: "card" }, h("img", { src: imgUrl, alt: "AGP percentile plot and daily traces", "data-testid": "agp-png" })),
      h("section", { class: "card" }, h("table", { "data-testid": "agp-metrics" },
        h("thead", {}, h("tr", {}, h("th", {}, "Metric"), h("th", {}, "Value"), h("th", {}, "Goal"))),
        h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))))))].filter(Boolean));
}

// ------------------------------------------------------------------ settings editor
const SCHEDULES = [
  { key: "basal_schedule", title: "Basal schedule", fields: [["rate_u_per_h", "U/h", "0.05"]], hint: "0–30 U/h, at most the max basal" },
  { key: "carb_ratios", title: "Carb ratios", fields: [["carbs_g_per_u", "g/U", "0.1"]], hint: "2–150 g/U" },
  { key: "sensitivities", title: "Insulin sensitivity", fields: [["isf_mg_dl_per_u", "mg/dL/U", "1"]], hint: "10–500 mg/dL/U" },
  { key: "targets", title: "Correction targets", fields: [["low_mg_dl", "low mg/dL", "1"], ["high_mg_dl", "high mg/dL", "1"]], hint: "80–180 mg/dL, low ≤ high" },
];
const AGE_GROUPS = ["child", "teen", "adult", "resistant", "pregnant"];
// Opened one stage at a time by the server (gateway/therapy/loop_stages.py).
const LOOP_MODES = [["open_loop", "Open loop (suggestions only)"], ["low_glucose_suspend", "Low-glucose suspend"],
  ["closed_loop_temp_basal", "Closed loop, temp basals"], ["closed_loop_smb", "Closed loop, temp basals and micro-boluses"]];

const toHHMM = (min) => `${String(Math.floor(min / 60)).padStart(2, "0")}:${String(min % 60).padStart(2, "0")}`;
const toMin = (hhmm) => { const [hh, mm] = hhmm.split(":").map(Number); return hh * 60 + mm; };

async function settingsView(view, personId) {
  let current = null;
  try {
    current = await api(PATHS.settings(personId));
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404 && e.code === "not_found")) throw e;
  }
  const people = await api(PATHS.people);
  const who = people.find((p) => p.person_id === personId);
  const canEdit = who && (who.permissions.includes("edit_settings"));
  const s = current ? current.settings : {
    age_group: "adult", basal_schedule: [{ start_min: 0, rate_u_per_h: 0.8 }],
    carb_ratios: [{ start_min: 0, carbs_g_per_u: 10 }], sensitivities: [{ start_min: 0, isf_mg_dl_per_u: 50 }],
    targets: [{ start_min: 0, low_mg_dl: 100, high_mg_dl: 120 }], max_bolus_u: 5, max_basal_u_per_h: 2, max_iob_u: 0,
  };
  const message = h("div", { "data-testid": "settings-message" });
  const form = h("form", { class: "card", novalidate: true, "data-testid": "settings-form" });
  const sections = {};
  for (const sch of SCHEDULES) {
    const rows = h("div", { class: "sched", "data-schedule": sch.key });
    const addRow = (seg) => {
      const row = h("div", { class: "row" },
        h("input", { type: "time", step: "1800", value: toHHMM(seg.start_min), "aria-label": "start", "data-field": "start_min" }),
        sch.fields.map(([f, label, step]) => h("input", { type: "number", step, value: seg[f] ?? "", "aria-label": label, placeholder: label, "data-field": f })),
        sch.fields.length === 1 ? h("span", { class: "hint" }, sch.fields[0][1]) : null,
        h("button", { type: "button", class: "small", "aria-label": "remove", onclick: () => row.remove() }, "✕"));
      rows.append(row);
    };
    (s[sch.key] || []).forEach(addRow);
    sections[sch.key] = { rows, fields: sch.fields };
    form.append(h("h2", {}, sch.title, " ", h("span", { class: "hint" }, sch.hint)), rows,
      h("button", { type: "button", class: "small", onclick: () => addRow({ start_min: 720 }) }, "+ segment"));
  }
  const num = (name, label, value, hint) => h("label", {}, label,
    h("input", { type: "number", step: "0.1", name, value }), h("span", { class: "hint" }, hint));
  form.append(h("h2", {}, "Limits"), h("div", { class: "fields" },
    h("label", {}, "Age group", h("select", { name: "age_group" },
      AGE_GROUPS.map((g) => h("option", { value: g, selected: g === s.age_group }, g)))),
    num("max_bolus_u", "Max bolus (U)", s.max_bolus_u, "≤ 30 U and the age-group limit"),
    num("max_basal_u_per_h", "Max basal (U/h)", s.max_basal_u_per_h, "age-group limit applies"),
    num("max_iob_u", "Max IOB (U)", s.max_iob_u, "0 = no automatic insulin above basal"),
    h("label", {}, "Loop mode", h("select", { name: "loop_mode" },
      LOOP_MODES.map(([m, label]) => h("option", { value: m, selected: m === (s.loop_mode || "open_loop") }, label))),
      h("span", { class: "hint" }, "one stage up at a time, after 14 / 5 / 8 days; down at any time"))),
  h("label", {}, "Reason for the change", h("input", { name: "reason", maxlength: "500" })),
  message,
  h("div", { class: "actions" },
    h("button", { type: "submit", class: "primary", disabled: !canEdit }, "Save new version"),
    h("span", { class: "muted", "data-testid": "settings-version" }, current ? `version ${current.version}, changed ${fmtDateTime(new Date(current.changed_at))}` : "no settings yet"),
    canEdit ? null : h("span", { class: "muted" }, "(you can view, not edit)")));

  const collect = () => {
    // fields the form does not show (time zone, …) are kept as they are, never reset to defaults
    const out = { ...(current ? current.settings : {}), age_group: form.age_group.value, loop_mode: form.loop_mode.value };
    for (const [key, { rows, fields }] of Object.entries(sections)) {
      out[key] = [...rows.children].map((row) => {
        const seg = { start_min: toMin(row.querySelector('[data-field="start_min"]').value || "00:00") };
        for (const [f] of fields) {
          const v = row.querySelector(`[data-field="${f}"]`).value;
          seg[f] = v === "" ? null : Number(v);
        }
        return seg;
      }).sort((a, b) => a.start_min - b.start_min);
    }
    for (const f of ["max_bolus_u", "max_basal_u_per_h", "max_iob_u"]) {
      out[f] = form[f].value === "" ? null : Number(form[f].value);
    }
    return out;
  };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    message.replaceChildren();
    try {
      const saved = await api(PATHS.settings(personId), { method: "PUT", body: {
        settings: collect(), expected_version: current ? current.version : 0, reason: form.reason.value,
      } });
      current = saved;
      message.replaceChildren(h("div", { class: "ok", role: "status" }, `Saved as version ${saved.version}.`));
      form.querySelector('[data-testid="settings-version"]').textContent = `version ${saved.version}, changed ${fmtDateTime(new Date(saved.changed_at))}`;
      loadHistory();
    } catch (e) {
      message.replaceChildren(errorBox(e));
    }
  });
  const history = h("div");
  const loadHistory = async () => {
    const versions = await api(PATHS.history(personId));
    history.replaceChildren(h("h2", {}, "History"), versions.length ? h("table", {},
      h("thead", {}, h("tr", {}, ["Version", "When", "Changed", "Reason"].map((t) => h("th", {}, t)))),
      h("tbody", {}, versions.map((v) => h("tr", {}, h("td", {}, v.version), h("td", {}, fmtDateTime(new Date(v.changed_at))),
        h("td", {}, v.changed_fields.join(", ")), h("td", {}, v.reason))))) : h("p", { class: "muted" }, "No versions yet."));
  };
  view.replaceChildren(h("h1", {}, `Therapy settings${who ? `: ${who.display_name}` : ""}`), form, h("div", { class: "card" }, history));
  await loadHistory();
}

window.addEventListener("hashchange", route);
route();
