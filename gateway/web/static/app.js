// The console's shell: sign in, pick the sections the key's role may see, switch between them.

import { api, ApiError, collab, session } from "./api.js";
import { showAudit, showBudget } from "./audit.js";
import { byId, h, put, status } from "./dom.js";
import { showDatasets, showEditor, showPolicy, showProposals } from "./policy.js";
import { showQuery } from "./query.js";

const SECTIONS = {
  policy: { title: "Active policy", show: (root) => showPolicy(root) },
  proposals: { title: "Proposals", show: (root, me) => showProposals(root, me) },
  editor: { title: "Policy editor", show: (root) => showEditor(root) },
  audit: { title: "Audit trail", show: (root) => showAudit(root) },
  budget: { title: "Budget", show: (root, me) => showBudget(root, me) },
  query: { title: "Query", show: async (root) => showQuery(root, await api("GET", collab("/policy"))) },
  datasets: { title: "Datasets", show: (root) => showDatasets(root) },
};

const BY_ROLE = {
  compliance: ["policy", "proposals", "editor", "audit", "budget"],
  analyst: ["policy", "budget", "query"],
  contributor: ["policy", "datasets"],
};

let me = null;

async function open(name) {
  const section = SECTIONS[name];
  const body = byId("view-body");
  const note = byId("view-status");
  for (const tab of byId("tabs").children) tab.setAttribute("aria-current", tab.dataset.section === name ? "page" : "false");
  put(byId("view-title"), section.title);
  byId("view").dataset.section = name;
  put(body);
  status(note, "busy", "Loading…");
  try {
    await section.show(body, me);
    note.hidden = true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return signOut("Your key is no longer accepted; sign in again.");
    status(note, "error", err instanceof ApiError ? `${err.code}: ${err.message}` : String(err));
  }
}

function showConsole(collaboration) {
  const sections = BY_ROLE[me.role] || [];
  byId("sign-in").hidden = true;
  put(byId("who"), `${me.org} · ${me.role} · ${collaboration.name} (${collaboration.id})`);
  byId("who").hidden = false;
  byId("sign-out").hidden = false;
  const tabs = byId("tabs");
  put(
    tabs,
    sections.map((name) =>
      h("button", { type: "button", "data-section": name, id: `tab-${name}`, on: { click: () => { history.replaceState(null, "", `#${name}`); open(name); } } }, SECTIONS[name].title),
    ),
  );
  tabs.hidden = false;
  byId("view").hidden = false;
  if (!sections.length) {
    put(byId("view-body"), h("p", {}, `A ${me.role} key has nothing to see here; operators use the CLI (insightgw admin).`));
    return;
  }
  const wanted = location.hash.slice(1);
  open(sections.includes(wanted) ? wanted : sections[0]);
}

function signOut(message) {
  session.close();
  me = null;
  put(byId("tabs"));
  byId("tabs").hidden = true;
  byId("view").hidden = true;
  put(byId("view-body"));
  byId("who").hidden = true;
  byId("sign-out").hidden = true;
  byId("sign-in").hidden = false;
  byId("collaboration").value = session.lastCollaboration;
  const note = byId("sign-in-status");
  if (message) status(note, "info", message);
  else note.hidden = true;
}

async function enter() {
  me = await api("GET", "/v1/me");
  const collaboration = await api("GET", collab());
  showConsole(collaboration);
}

async function signIn(event) {
  event.preventDefault();
  const keyInput = byId("api-key");
  const key = keyInput.value.trim();
  const collaboration = byId("collaboration").value.trim();
  keyInput.value = "";
  const note = byId("sign-in-status");
  status(note, "busy", "Signing in…");
  session.open(key, collaboration);
  try {
    await enter();
    note.hidden = true;
  } catch (err) {
    session.close();
    const why = err instanceof ApiError && err.status === 401 ? "The key was not accepted." : err instanceof ApiError && err.status === 404 ? "No such collaboration for this key." : err.message;
    status(note, "error", why);
  }
}

function start() {
  byId("sign-in-form").addEventListener("submit", signIn);
  byId("sign-out").addEventListener("click", () => signOut("Signed out."));
  byId("collaboration").value = session.lastCollaboration;
  if (session.key) enter().catch(() => signOut("Sign in again."));
}

start();
