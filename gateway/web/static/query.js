// The analyst's SQL box: explain (cost and expected error, nothing spent), run, and the release
// as a table and as bars with their 95% intervals.

import { api, collab } from "./api.js";
import { barChart } from "./charts.js";
import { h, num, put, status, table } from "./dom.js";

/** A first question built from the policy: count by the first dimension with public keys. */
function exampleSql(policy) {
  for (const [id, ds] of Object.entries(policy.datasets || {})) {
    for (const [name, rule] of Object.entries(ds.columns || {})) {
      if (rule.use === "dimension" && Array.isArray(rule.keys)) {
        return `SELECT ${name}, COUNT(*) AS customers\nFROM ${id}\nGROUP BY ${name}`;
      }
    }
  }
  return "";
}

function isCell(value) {
  return value !== null && typeof value === "object" && "value" in value;
}

function cellText(value) {
  if (value === null || value === undefined) return "suppressed";
  if (isCell(value)) {
    const ci = Array.isArray(value.ci95) ? ` [${num(value.ci95[0])}, ${num(value.ci95[1])}]` : "";
    const rank = value.rank_error95 !== undefined ? ` (rank ±${num(value.rank_error95, 1)})` : "";
    return `${num(value.value)}${ci}${rank}`;
  }
  if (value && Array.isArray(value.values)) return value.values.map((v) => num(v, 0)).join(" | ");
  return String(value);
}

function explainView(x) {
  const widths = x.aggregates.map((a) => {
    let expected = "";
    if (a.ci95_halfwidth !== undefined) expected = `± ${num(a.ci95_halfwidth)}`;
    else if (a.ci95_halfwidth_at_group_size) expected = Object.entries(a.ci95_halfwidth_at_group_size).map(([n, w]) => `± ${num(w)} at ${num(Number(n), 0)} customers`).join(", ");
    else if (a.rank_error95 !== undefined) expected = `rank within ±${num(a.rank_error95, 1)} rows`;
    return [h("code", {}, a.as), a.fn, expected];
  });
  return h(
    "div",
    { id: "explain-result" },
    h("p", { class: x.within_budget ? "ok-text" : "error-text" },
      `Cost: ε ${num(x.epsilon, 6)}${x.delta ? `, δ ${x.delta}` : ""}. Budget left: ε ${num(x.budget.epsilon_left, 6)}. ${x.within_budget ? "Within budget." : "Over budget: the query would be refused."}`),
    h("p", { class: "meta" }, `${x.groups === null ? "Groups chosen by DP partition selection" : `${x.groups} groups`} · groups under a noisy count of ${x.min_group_size} are suppressed · policy version ${x.policy_version}`),
    table(["output", "aggregate", "expected 95% error"], widths, { class: "explain" }),
  );
}

function chartable(rows, alias) {
  return rows.some((r) => isCell(r[alias]) && typeof r[alias].value === "number");
}

function releaseView(release) {
  const rows = release.rows;
  // The outputs, in release order (a suppressed row holds them too, with null values).
  const names = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((k) => !release.group_by.includes(k) && k !== "suppressed");
  const picker = h("select", { id: "chart-output", "aria-label": "aggregate to chart" });
  for (const name of names.filter((n) => chartable(rows, n))) picker.append(h("option", { value: name }, name));
  const chart = h("div", { id: "release-chart" });
  const label = (r) => release.group_by.map((g) => String(r[g])).join(" · ") || "all";
  function draw() {
    const alias = picker.value;
    if (!alias) return put(chart, h("p", { class: "meta" }, "Nothing to chart."));
    const bars = rows.map((r) => {
      const cell = r[alias];
      if (!isCell(cell)) return { label: label(r), value: null };
      const ci = Array.isArray(cell.ci95) ? cell.ci95 : [null, null];
      return { label: label(r), value: cell.value, lo: ci[0], hi: ci[1] };
    });
    put(chart, barChart(bars, { title: `${alias} with 95% intervals`, unit: alias }));
  }
  picker.addEventListener("change", draw);
  const view = h(
    "div",
    { id: "release" },
    h("p", { class: "meta", id: "release-meta" },
      `${release.replay ? "Replayed (no cost)" : `ε ${num(release.epsilon_spent, 6)} spent`} · ε ${num(release.budget.epsilon_left, 6)} left · policy version ${release.policy_version} · query ${release.query_id}`),
    table(
      [...release.group_by, ...names],
      rows.map((r) => [...release.group_by.map((g) => String(r[g])), ...names.map((n) => h("td", { class: r.suppressed ? "suppressed" : "num" }, cellText(r[n])))]),
      { class: "release", id: "release-table" },
    ),
    h("label", {}, "Chart ", picker),
    chart,
  );
  draw();
  return view;
}

/** SQL, ε, Explain and Run. */
export function showQuery(root, policyDoc) {
  const sql = h("textarea", { id: "sql", rows: 8, spellcheck: "false", "aria-label": "SQL" });
  sql.value = exampleSql(policyDoc.policy || {});
  const cap = (policyDoc.policy && policyDoc.policy.privacy && policyDoc.policy.privacy.max_epsilon_per_query) || 1;
  const epsilon = h("input", { id: "epsilon", type: "number", min: "0.001", step: "0.01", max: String(cap), "aria-label": "epsilon" });
  epsilon.value = String(Math.min(0.5, cap));
  const out = h("p", { id: "query-status", class: "status", hidden: true, role: "status", "aria-live": "polite" });
  const result = h("div", { id: "query-result" });
  const body = () => ({ sql: sql.value, epsilon: Number(epsilon.value) });

  async function explain() {
    status(out, "busy", "Explaining (nothing is spent)…");
    try {
      const x = await api("POST", collab("/queries/explain"), { body: body() });
      out.hidden = true;
      put(result, explainView(x));
    } catch (err) {
      status(out, "error", `${err.code}: ${err.message}`);
    }
  }

  async function run() {
    status(out, "busy", "Running…");
    try {
      const release = await api("POST", collab("/queries"), { body: body() });
      out.hidden = true;
      put(result, releaseView(release));
    } catch (err) {
      status(out, "error", `${err.code}: ${err.message}`);
    }
  }

  put(
    root,
    h("p", { class: "meta" }, "Datasets are named owner.name; the Policy tab lists what each column may do."),
    sql,
    h(
      "div",
      { class: "actions" },
      h("label", {}, "ε ", epsilon),
      h("button", { type: "button", id: "explain", on: { click: explain } }, "Explain"),
      h("button", { type: "button", id: "run", class: "primary", on: { click: run } }, "Run"),
    ),
    out,
    result,
  );
}
