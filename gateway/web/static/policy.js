// The active policy made readable, the datasets a member may see, pending proposals with their
// diff (approve / reject / withdraw), and the editor whose validation is the server's.

import { api, collab, draftCheckPath } from "./api.js";
import { h, num, put, status, table } from "./dom.js";

function mayDo(rule) {
  if (rule.use === "hidden") return "nothing (hidden)";
  if (rule.use === "dimension") {
    const keys = Array.isArray(rule.keys)
      ? `public keys: ${rule.keys.map(String).join(", ")}`
      : "private keys: groups released only through DP partition selection";
    return `group by, filter · ${keys}`;
  }
  const aggregates = ["count", ...(rule.aggregates || [])];
  const bins = Array.isArray(rule.bins) ? ` · histogram bins: ${rule.bins.join(", ")}` : "";
  return `${aggregates.join(", ")}${bins}`;
}

function columnsTable(columns) {
  return table(
    ["column", "use", "type", "may be used for", "bounds"],
    Object.entries(columns || {}).map(([name, rule]) => [
      h("code", {}, name),
      rule.use,
      rule.type || (rule.use === "dimension" ? "string" : ""),
      mayDo(rule),
      Array.isArray(rule.bounds) ? `${num(rule.bounds[0])} to ${num(rule.bounds[1])}` : "",
    ]),
    { class: "columns" },
  );
}

function rulesText(rules) {
  const entries = Object.entries(rules || {});
  return entries.length ? entries.map(([k, v]) => `${k}: ${num(v, 6)}`).join(" · ") : "none of its own";
}

/** Everything the active policy says, as tables. */
export async function showPolicy(root) {
  const doc = await api("GET", collab("/policy"));
  const p = doc.policy || {};
  const privacy = p.privacy || {};
  put(
    root,
    h("p", { class: "meta" }, `Version ${doc.version}, ${doc.status}, proposed by ${doc.proposed_by} on ${doc.created_at.slice(0, 10)}.`),
    h("h3", {}, "Privacy"),
    table(
      ["mechanism", "max ε per query", "δ"],
      [[privacy.mechanism || "laplace", num(privacy.max_epsilon_per_query, 6), String(privacy.delta ?? "")]],
    ),
    h("h3", {}, "Budgets per analyst organisation"),
    table(
      ["organisation", "budget", "period"],
      Object.entries(p.budgets || {}).map(([org, b]) => [
        org,
        b.epsilon !== undefined ? `ε ${num(b.epsilon, 6)}` : `ρ ${num(b.rho, 6)}`,
        b.period || "month",
      ]),
      { class: "budgets" },
    ),
    h("h3", {}, "Release rules"),
    h("p", {}, rulesText(p.rules)),
    h("h3", {}, "Joins (on the customer key only)"),
    h("ul", {}, (p.joins || []).map((pair) => h("li", {}, pair.join(" ⋈ ")))),
    Object.entries(p.datasets || {}).map(([id, ds]) =>
      h(
        "section",
        { class: "dataset", "data-dataset": id },
        h("h3", {}, `Dataset ${id}`),
        h(
          "p",
          { class: "meta" },
          `Owner ${ds.owner} · ${ds.kind || "customer"} · customer key ${ds.customer_key} · at most ${ds.max_rows_per_unit ?? 1} row(s) per customer · rules: ${rulesText(ds.rules)}`,
        ),
        columnsTable(ds.columns),
      ),
    ),
  );
  return doc;
}

/** The datasets the policy lets this caller see (row counts only for the owner). */
export async function showDatasets(root) {
  const listing = await api("GET", collab("/datasets"));
  put(
    root,
    h("p", { class: "meta" }, `Under policy version ${listing.policy_version}.`),
    table(
      ["dataset", "owner", "kind", "version", "uploaded", "rows", "columns"],
      listing.datasets.map((d) => [
        h("code", {}, d.id),
        d.owner,
        d.kind,
        d.version ?? "not uploaded",
        d.uploaded_at ? d.uploaded_at.slice(0, 19).replace("T", " ") : "",
        d.rows !== undefined ? num(d.rows, 0) : "(owner only)",
        Object.keys(d.columns || {}).join(", "),
      ]),
      { class: "datasets" },
    ),
  );
}

/** A unified diff, each line classed by its first character. */
export function diffView(diff) {
  if (!diff) return h("p", { class: "meta" }, "No difference from the active version.");
  return h(
    "pre",
    { class: "diff" },
    diff.split("\n").map((line) => {
      const kind = line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk" : "same";
      return h("span", { class: `diff-${kind}` }, `${line}\n`);
    }),
  );
}

async function decide(version, action, out, refresh) {
  status(out, "busy", `${action}…`);
  try {
    const answer = await api("POST", collab(`/policy/versions/${version}/${action}`));
    status(out, "ok", `Version ${answer.version} is now ${answer.status}.`);
    await refresh();
  } catch (err) {
    status(out, "error", `${err.code}: ${err.message}`);
  }
}

/** Pending proposals with their diff and buttons, then the history of versions. */
export async function showProposals(root, me) {
  const { versions } = await api("GET", collab("/policy/versions"));
  const pending = versions.filter((v) => v.status === "pending");
  const details = await Promise.all(pending.map((v) => api("GET", collab(`/policy/versions/${v.version}`))));
  const refresh = () => showProposals(root, me);
  put(
    root,
    details.length ? null : h("p", { class: "meta", id: "no-proposals" }, "No proposal is pending."),
    details.map((v) => {
      const out = h("p", { class: "status", hidden: true, role: "status" });
      const mine = v.approvals[me.org] === false;
      return h(
        "article",
        { class: "proposal", "data-version": v.version },
        h("h3", {}, `Version ${v.version}, proposed by ${v.proposed_by}`),
        h(
          "ul",
          { class: "approvals" },
          Object.entries(v.approvals).map(([org, ok]) => h("li", { class: ok ? "approved" : "waiting" }, `${org}: ${ok ? "approved" : "not yet approved"}`)),
        ),
        diffView(v.diff),
        h(
          "div",
          { class: "actions" },
          mine ? h("button", { type: "button", class: "approve", on: { click: () => decide(v.version, "approve", out, refresh) } }, "Approve") : null,
          mine ? h("button", { type: "button", class: "reject danger", on: { click: () => decide(v.version, "reject", out, refresh) } }, "Reject") : null,
          v.proposed_by === me.org ? h("button", { type: "button", class: "withdraw", on: { click: () => decide(v.version, "withdraw", out, refresh) } }, "Withdraw") : null,
        ),
        out,
      );
    }),
    h("h3", {}, "All versions"),
    table(
      ["version", "status", "proposed by", "created", "approvals"],
      versions.map((v) => [
        String(v.version),
        v.status,
        v.proposed_by,
        v.created_at.slice(0, 19).replace("T", " "),
        Object.entries(v.approvals).map(([org, ok]) => `${org} ${ok ? "✓" : "–"}`).join(" "),
      ]),
      { class: "versions" },
    ),
  );
}

function lineOf(text, line) {
  return text.split("\n")[line - 1] ?? "";
}

function selectLine(area, line) {
  const lines = area.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
  area.focus();
  area.setSelectionRange(start, start + (lines[line - 1] || "").length);
}

/** The server's verdict on the draft, next to the line it concerns. */
function showVerdict(out, area, error) {
  const where = error.line ? `Line ${error.line}, column ${error.column}: ` : "";
  const parts = [h("strong", {}, `${error.code}`), ` ${where}${error.message}`];
  if (error.line) {
    const excerpt = lineOf(area.value, error.line);
    parts.push(
      h("pre", { class: "excerpt" }, `${String(error.line).padStart(4)} | ${excerpt}\n       ${" ".repeat(Math.max(0, error.column - 1))}^`),
      h("button", { type: "button", class: "link", on: { click: () => selectLine(area, error.line) } }, "Go to line"),
    );
  }
  area.setAttribute("aria-invalid", "true");
  status(out, "error", ...parts);
}

/** A YAML editor: Check asks the server (nothing stored), Propose submits a new version. */
export async function showEditor(root) {
  const active = await api("GET", collab("/policy"));
  const area = h("textarea", { id: "policy-draft", spellcheck: "false", rows: 28, "aria-label": "policy document (YAML)" });
  area.value = active.document;
  const out = h("div", { id: "editor-status", class: "status", hidden: true, role: "status", "aria-live": "polite" });
  const result = h("div", { id: "editor-result" });

  async function check() {
    status(out, "busy", "Checking with the gateway…");
    try {
      const verdict = await api("POST", draftCheckPath(), { body: area.value, contentType: "application/yaml" });
      if (!verdict.valid) {
        showVerdict(out, area, verdict.error);
        return false;
      }
      area.removeAttribute("aria-invalid");
      status(out, "ok", `Valid. Proposing it would need approval from: ${verdict.required.join(", ")}.`);
      return true;
    } catch (err) {
      status(out, "error", `${err.code}: ${err.message}`);
      return false;
    }
  }

  async function propose() {
    put(result);
    if (!(await check())) return;
    status(out, "busy", "Proposing…");
    try {
      const answer = await api("PUT", collab("/policy"), { body: area.value, contentType: "application/yaml" });
      status(out, "ok", `Version ${answer.version} is ${answer.status}.`);
      put(result, h("h3", {}, `What version ${answer.version} changes`), diffView(answer.diff));
    } catch (err) {
      if (err.code === "invalid_policy") showVerdict(out, area, { code: err.code, message: err.message, ...lineColumn(err.message) });
      else status(out, "error", `${err.code}: ${err.message}`);
    }
  }

  put(
    root,
    h("p", { class: "meta" }, `Editing from the active version ${active.version}. The gateway validates every draft; proposals need each affected owner's approval.`),
    area,
    h(
      "div",
      { class: "actions" },
      h("button", { type: "button", id: "check-draft", on: { click: check } }, "Check"),
      h("button", { type: "button", id: "propose-draft", class: "primary", on: { click: propose } }, "Propose"),
      h("button", { type: "button", id: "reset-draft", on: { click: () => { area.value = active.document; put(result); out.hidden = true; } } }, "Reset"),
    ),
    out,
    result,
  );
}

function lineColumn(message) {
  const found = /\(line (\d+), column (\d+)\)\s*$/.exec(message);
  return found ? { line: Number(found[1]), column: Number(found[2]) } : { line: null, column: null };
}
