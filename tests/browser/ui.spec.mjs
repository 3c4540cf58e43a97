// Drives the gateway's web UI in Debian's headless Chromium with playwright-core (Playwright
// never downloads a browser here). Called by tests/browser/test_ui.py, which starts the gateway,
// seeds people and readings, and answers "need-reading" requests on stdin.
//
// env: UI_URL, PERSON_EMAIL, CAREGIVER_EMAIL, PASSWORD, PERSON_ID, SHOTS_DIR, CHROMIUM
// stdout: "STEP <name> <json>" lines; the last line is "RESULT <json>". Exit code 0 = passed.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`missing env ${name}`);
  return v;
};
const URL_ = env("UI_URL");
const PERSON_ID = env("PERSON_ID");
const SHOTS = env("SHOTS_DIR");
const result = { steps: [] };
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function step(name, data = {}) {
  result.steps.push(name);
  console.log(`STEP ${name} ${JSON.stringify(data)}`);
}
async function ask(what, data) {
  console.log(`ASK ${what} ${JSON.stringify(data)}`);
  const { value } = await lines.next();
  return JSON.parse(value);
}
function check(cond, message) {
  if (!cond) throw new Error(`check failed: ${message}`);
}

const profile = mkdtempSync(join(tmpdir(), "langerhans-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1280, height: 860 },
  deviceScaleFactor: 1,
  timezoneId: "UTC",
  locale: "en-GB",
});
const pageErrors = [];
let exitCode = 0;
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|SyntaxError|TypeError/.test(m.text())) {
      pageErrors.push(m.text());
    }
  });
  page.setDefaultTimeout(15000);

  // ---- sign in (a wrong password first: the error is shown, nothing else happens)
  await page.goto(`${URL_}/?poll_s=2`);
  await page.waitForURL(/#\/signin/);
  await page.fill('input[name="email"]', env("PERSON_EMAIL"));
  await page.fill('input[name="password"]', "not the password");
  await page.click('button[type="submit"]');
  await page.locator(".error").waitFor();
  check(page.url().includes("#/signin"), "a failed sign-in stays on the sign-in page");
  await page.fill('input[name="password"]', env("PASSWORD"));
  await page.click('button[type="submit"]');
  await page.waitForURL(new RegExp(`#/live/${PERSON_ID}`));
  step("signed-in");

  // ---- live chart shows the newest seeded reading, then a new one without a reload
  const value = page.getByTestId("current-value");
  const seeded = await ask("latest", {});
  await page.waitForFunction((v) => document.querySelector('[data-testid="current-value"]')?.textContent === String(v), seeded.glucose_mg_dl);
  const before = Number(await page.getByTestId("chart").getAttribute("data-readings"));
  check(before > 10, `chart has the seeded readings (${before})`);
  const mode = await page.getByTestId("feed").getAttribute("data-mode");
  const fresh = await ask("new-reading", { mode });
  const t0 = Date.now();
  await page.waitForFunction((v) => document.querySelector('[data-testid="current-value"]')?.textContent === String(v), fresh.glucose_mg_dl);
  const updateMs = Date.now() - t0;
  await page.waitForFunction((n) => Number(document.querySelector('[data-testid="chart"]').dataset.readings) > n, before);
  check((await value.textContent()) === String(fresh.glucose_mg_dl), "current value updated");
  check((await page.getByTestId("current-age").textContent()).includes("just now") ||
    (await page.getByTestId("current-age").textContent()).includes("min ago"), "age shown");
  const statusText = await page.getByTestId("status").textContent();
  check(/Insulin on board/.test(statusText), "status block rendered");
  step("live-updated", { mode: await page.getByTestId("feed").getAttribute("data-mode"), updateMs, statusText });
  await page.screenshot({ path: join(SHOTS, "ui_live.png") });

  // ---- alerts: acknowledge when the alerts service answers; else the page says unavailable
  await page.goto(`${URL_}/?poll_s=2#/alerts/${PERSON_ID}`);
  await page.locator('[data-testid="ack"], [data-testid="alerts-unavailable"], table, p.card').first().waitFor();
  const ackButtons = page.getByTestId("ack");
  if (await ackButtons.count()) {
    const row = page.locator("tr.alert").filter({ has: ackButtons.first() }).first();
    const alertId = await row.getAttribute("data-alert");
    await ackButtons.first().click();
    await page.locator(`tr[data-alert="${alertId}"].acknowledged`).waitFor();
    result.alerts = { acknowledged: alertId };
  } else if (await page.getByTestId("alerts-unavailable").count()) {
    result.alerts = { unavailable: await page.getByTestId("alerts-unavailable").textContent() };
  } else {
    result.alerts = { none: true };
  }
  step("alerts", result.alerts);

  // ---- AGP report: the PNG is loaded (fetched with the bearer token) and the metrics shown
  await page.goto(`${URL_}/?poll_s=2#/agp/${PERSON_ID}`);
  await page.getByTestId("agp-metrics").waitFor();
  await page.waitForFunction(() => {
    const img = document.querySelector('[data-testid="agp-png"]');
    return img && img.complete && img.naturalWidth > 500;
  });
  const metrics = await page.getByTestId("agp-metrics").textContent();
  check(/Time in range 70–180\s*\d+\.\d %/.test(metrics), `TIR shown: ${metrics}`);
  const agpJson = await ask("agp", {});
  check(metrics.includes(`${agpJson.tir_pct.toFixed(1)} %`), "UI TIR equals the API's");
  step("agp", { tir: agpJson.tir_pct });
  await page.screenshot({ path: join(SHOTS, "ui_agp.png"), fullPage: true });

  // ---- settings: a value outside the guardrails is refused by the server and explained
  await page.goto(`${URL_}/?poll_s=2#/settings/${PERSON_ID}`);
  await page.getByTestId("settings-form").waitFor();
  const version0 = await page.getByTestId("settings-version").textContent();
  const isf = page.locator('[data-schedule="sensitivities"] [data-field="isf_mg_dl_per_u"]').first();
  await isf.fill("600");
  await page.fill('input[name="reason"]', "try a very weak sensitivity");
  await page.click('button[type="submit"]');
  const err = page.getByTestId("settings-message").locator(".error");
  await err.waitFor();
  const errText = await err.textContent();
  check(/isf_mg_dl_per_u/.test(errText) && /500/.test(errText), `guardrail error shown: ${errText}`);
  check((await page.getByTestId("settings-version").textContent()) === version0, "no new version");
  step("settings-refused", { error: errText });
  await page.screenshot({ path: join(SHOTS, "ui_settings.png"), fullPage: true });
  await isf.fill("55");
  await page.fill('input[name="reason"]', "more sensitive in the evening");
  await page.click('button[type="submit"]');
  await page.getByTestId("settings-message").locator(".ok").waitFor();
  const saved = await ask("settings", {});
  check(saved.isf === 55, "the server stored the new sensitivity");
  // what the form does not show is kept: the loop stays in its mode, the time zone stays
  check(saved.loop_mode === "open_loop" && saved.time_zone === "Europe/Stockholm", `mode and zone kept: ${JSON.stringify(saved)}`);
  step("settings-saved", saved);
  // the loop opens in stages: straight to micro-boluses is refused and explained
  await page.selectOption('select[name="loop_mode"]', "closed_loop_smb");
  await page.fill('input[name="reason"]', "try the full closed loop");
  await page.click('button[type="submit"]');
  const stageErr = page.getByTestId("settings-message").locator(".error");
  await stageErr.waitFor();
  const stageText = await stageErr.textContent();
  check(/more than one stage/.test(stageText) && /low_glucose_suspend/.test(stageText), `stage error shown: ${stageText}`);
  check((await ask("settings", {})).version === saved.version, "no version for the refused mode");
  step("settings-stage-refused", { error: stageText });

  // ---- caregiver on a phone-sized screen: several people with their current glucose
  await page.click("#signout");
  await page.waitForURL(/#\/signin/);
  await page.setViewportSize({ width: 390, height: 844 });
  await page.fill('input[name="email"]', env("CAREGIVER_EMAIL"));
  await page.fill('input[name="password"]', env("PASSWORD"));
  await page.click('button[type="submit"]');
  await page.waitForURL(/#\/people/);
  await page.waitForFunction(() => document.querySelectorAll('article.person [data-testid="current-value"]').length >= 2);
  const cards = await page.locator("article.person").count();
  step("caregiver", { cards });
  await page.screenshot({ path: join(SHOTS, "ui_caregiver.png"), fullPage: true });
  check(pageErrors.length === 0, `no script errors: ${pageErrors.join(" | ")}`);
  result.ok = true;
} catch (e) {
  result.ok = false;
  result.error = String(e.stack || e);
  result.pageErrors = pageErrors;
  exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(`RESULT ${JSON.stringify(result)}`);
process.exit(exitCode);
