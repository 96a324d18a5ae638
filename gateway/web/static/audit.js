// The audit trail (filters, verify) and the budget views: per analyst organisation over time
// from the ledger's history (every analyst organisation for compliance officers, their own for
// analysts, who also see a meter).

import { api, collab } from "./api.js";
import { stepChart } from "./charts.js";
import { h, num, put, status, table } from "./dom.js";

const PAGE = 1000;

/** Every audit event visible to the caller, oldest first (paged by `seq`, the caller's own numbering). */
export async function allEvents() {
  const events = [];
  for (let after = 0; ; ) {
    const page = await api("GET", collab(`/audit?limit=${PAGE}&after=${after}`));
    events.push(...page.events);
    if (page.events.length < PAGE) return events;
    after = page.events[page.events.length - 1].seq;
  }
}

function summary(event) {
  const d = event.details || {};
  const parts = [];
  if (d.version !== undefined) parts.push(`version ${d.version}`);
  if (d.required) parts.push(`needs ${d.required.join(", ")}`);
  if (d.dataset) parts.push(d.dataset);
  if (d.datasets && !d.dataset) parts.push(d.datasets.join(" ⋈ "));
  if (d.epsilon_spent !== undefined) parts.push(`ε ${num(d.epsilon_spent, 6)} spent`);
  if (d.outcome) parts.push(d.outcome);
  if (d.rows !== undefined) parts.push(`${num(d.rows, 0)} rows`);
  return parts.join(" · ");
}

function eventRow(event) {
  const details = h("pre", { class: "event-details", hidden: true }, JSON.stringify(event.details, null, 2));
  const toggle = h("button", { type: "button", class: "link", on: { click: () => { details.hidden = !details.hidden; } } }, "details");
  return h(
    "tr",
    { "data-seq": event.seq, "data-action": event.action },
    h("td", { class: "num" }, String(event.seq)),
    h("td", {}, event.at.slice(0, 19).replace("T", " ")),
    h("td", {}, `${event.actor.org ?? "operator"} (${event.actor.role ?? "offline"})`),
    h("td", {}, h("code", {}, event.action)),
    h("td", {}, summary(event), " ", toggle, details),
  );
}

/** The trail with filters (action family, organisation, dates, text) and a verify button. */
export async function showAudit(root) {
  const events = await allEvents();
  const family = h("select", { id: "audit-action", "aria-label": "action" }, h("option", { value: "" }, "all actions"));
  for (const f of [...new Set(events.map((e) => e.action.split(".")[0]))].sort()) family.append(h("option", { value: f }, `${f}.*`));
  const org = h("select", { id: "audit-org", "aria-label": "organisation" }, h("option", { value: "" }, "all organisations"));
  for (const o of [...new Set(events.map((e) => e.actor.org ?? "operator"))].sort()) org.append(h("option", { value: o }, o));
  const since = h("input", { type: "date", id: "audit-from", "aria-label": "from" });
  const until = h("input", { type: "date", id: "audit-to", "aria-label": "to" });
  const text = h("input", { type: "search", id: "audit-text", placeholder: "text in details", "aria-label": "text" });
  const body = h("tbody");
  const count = h("p", { class: "meta", id: "audit-count" });
  const verdict = h("p", { id: "audit-verify-status", class: "status", hidden: true, role: "status" });

  function render() {
    const shown = events.filter(
      (e) =>
        (!family.value || e.action.startsWith(`${family.value}.`)) &&
        (!org.value || (e.actor.org ?? "operator") === org.value) &&
        (!since.value || e.at.slice(0, 10) >= since.value) &&
        (!until.value || e.at.slice(0, 10) <= until.value) &&
        (!text.value || JSON.stringify(e).toLowerCase().includes(text.value.toLowerCase())),
    );
    put(body, shown.slice().reverse().map(eventRow));
    put(count, `${shown.length} of ${events.length} events (newest first).`);
  }

  async function verify() {
    status(verdict, "busy", "Verifying the hash chain and its signed head…");
    try {
      const v = await api("GET", collab("/audit/verify"));
      if (v.ok) status(verdict, "ok", `Chain intact: ${v.events} events, every link and the signed head verify.`);
      else status(verdict, "error", `Chain broken: the first entry that cannot be trusted is ${v.first_bad} (of ${v.events}).`);
    } catch (err) {
      status(verdict, "error", `${err.code}: ${err.message}`);
    }
  }

  for (const control of [family, org, since, until]) control.addEventListener("change", render);
  text.addEventListener("input", render);
  put(
    root,
    h(
      "div",
      { class: "filters" },
      family,
      org,
      h("label", {}, "from ", since),
      h("label", {}, "to ", until),
      text,
      h("button", { type: "button", id: "audit-verify", class: "primary", on: { click: verify } }, "Verify chain"),
    ),
    verdict,
    count,
    h("table", { class: "audit" }, h("thead", {}, h("tr", {}, ["seq", "time (UTC)", "actor", "action", "what"].map((c) => h("th", { scope: "col" }, c)))), body),
  );
  render();
}

function monthStart(date) {
  return new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1));
}

/**
 * Cumulative ε per analyst organisation in the current period, from the ledger
 * (`GET …/budget/history`): every query counts, whether or not it touched the caller's data.
 * The history lists each organisation's periods oldest first, the current one last.
 */
function budgetSeries(budgets, history) {
  return budgets.map((b) => {
    const periods = history.series.filter((sr) => sr.org === b.org);
    const current = periods[periods.length - 1];
    const points = current ? current.points.map((p) => [new Date(p.at), p.epsilon_spent]) : [];
    return { name: b.org, points, limit: b.epsilon_total };
  });
}

function budgetTable(budgets) {
  return table(
    ["organisation", "ε total", "ε spent", "ε left", "period", "resets at"],
    budgets.map((b) => [
      b.org,
      num(b.epsilon_total, 6),
      num(b.epsilon_spent, 6),
      num(b.epsilon_left, 6),
      b.period,
      b.resets_at ? b.resets_at.slice(0, 16).replace("T", " ") : "never",
    ]),
    { class: "budget-table" },
  );
}

function budgetChart(budgets, history) {
  const now = new Date();
  const series = budgetSeries(budgets, history);
  // From the first spend (or ten minutes ago), never before the period began: a month-long axis
  // would squeeze a day's activity into its last pixel.
  const first = Math.min(now.getTime() - 600_000, ...series.flatMap((sr) => sr.points.map((p) => p[0].getTime())));
  const periodStart = budgets.some((b) => b.period === "month") ? monthStart(now).getTime() : first;
  const from = new Date(Math.max(first, periodStart));
  return h("div", { id: "budget-chart" }, stepChart(series, { title: "ε spent per analyst organisation", unit: "ε", from, to: now }));
}

/** Compliance: every analyst organisation over time. Analysts: their own, now and over time. */
export async function showBudget(root, me) {
  const [{ budgets }, history] = await Promise.all([api("GET", collab("/budget")), api("GET", collab("/budget/history"))]);
  const note = h("p", { class: "meta" }, "Lines: ε spent this period, query by query, from the privacy-budget ledger. Dashed: each budget.");
  if (me.role !== "compliance") {
    put(
      root,
      budgets.map((b) =>
        h(
          "div",
          { class: "meter-row" },
          h("meter", { min: 0, max: b.epsilon_total, value: b.epsilon_spent, "aria-label": `ε spent by ${b.org}` }),
          ` ${b.org}: ε ${num(b.epsilon_spent, 6)} spent of ${num(b.epsilon_total, 6)}, ${num(b.epsilon_left, 6)} left`,
        ),
      ),
      budgetChart(budgets, history),
      note,
      budgetTable(budgets),
    );
    return;
  }
  put(root, budgetChart(budgets, history), note, budgetTable(budgets));
}
