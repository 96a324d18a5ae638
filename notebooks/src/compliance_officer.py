"""Source of notebooks/compliance_officer.ipynb (build with: python notebooks/build.py)."""

# %% [markdown]
# # Compliance officer: set the rules, approve changes, audit every query
#
# You are **ACME's compliance officer**. ACME's survey data is in the collaboration, and
# nothing may be done with it that you did not approve. The gateway gives you three tools:
#
# 1. the **policy**: a versioned YAML document that says which columns may be used how, how
#    much each analyst organisation may ask (its **budget** of ε per month), and the rules
#    every answer obeys. A change needs the approval of every data owner it affects;
# 2. the **budgets**: how much of its privacy budget each analyst organisation has spent;
# 3. the **audit trail**: an append-only, hash-chained, signed record of every upload,
#    policy change and query that touched your data, which you can verify yourself.
#
# In this notebook you will read the policy, propose a change and see BigMart's officer
# approve it, refuse a change BigMart proposes, restore the demo policy, and then read and
# verify the audit trail and chart each analyst organisation's budget use over time.
#
# **Before you start**: `make run` in the repository starts the gateway on
# http://127.0.0.1:8000 with the demo collaboration; set `INSIGHTGW_URL` and `INSIGHTGW_KEYS`
# to use another gateway or keys file. The trail and the chart are richer after the
# **retailer_upload** and **brand_analyst** notebooks, but any order works: on a fresh
# gateway, where nobody has asked anything yet, this notebook has ACME's analyst ask one
# question so that there is a query to audit.

# %%
import json
import os
import re
from pathlib import Path

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd
import yaml
from IPython.display import display

from clients import GatewayClient

GATEWAY_URL = os.environ.get("INSIGHTGW_URL", "http://127.0.0.1:8000")
KEYS_FILE = Path(os.environ.get("INSIGHTGW_KEYS", "var/demo-keys.json"))
if not KEYS_FILE.is_absolute() and not KEYS_FILE.exists() and (".." / KEYS_FILE).exists():
    KEYS_FILE = ".." / KEYS_FILE  # Jupyter was started in notebooks/
keys = json.loads(KEYS_FILE.read_text())
COLLABORATION = "acme-bigmart-cx"

acme = GatewayClient(GATEWAY_URL, keys["acme"]["compliance"])
# BigMart's officer: in real life a person at BigMart, with BigMart's key, on BigMart's laptop.
bigmart = GatewayClient(GATEWAY_URL, keys["bigmart"]["compliance"])
print("you are:", acme.me())

# %% [markdown]
# ## 1. The active policy
#
# This is the document both companies approved (YAML, with comments). Read it top down:
# the privacy mechanism and the most ε one query may spend; the budgets per analyst
# organisation; each dataset's columns and what they may be used for; which datasets may be
# joined; and the rules every answer obeys (`min_group_size`: groups with fewer customers,
# as measured by a *noisy* count, have their values withheld).

# %%
active = acme.policy_document(COLLABORATION)
demo_policy_text = active["document"]  # kept, to put the demo policy back at the end
print(f"version {active['version']} ({active['status']}), proposed by {active['proposed_by']}")
print(demo_policy_text)

# %% [markdown]
# Every version ever proposed stays readable, with who approved it:


# %%
def versions() -> pd.DataFrame:
    table = pd.DataFrame(acme.policy_versions(COLLABORATION))
    return table.set_index("version")[["status", "proposed_by", "created_at", "approvals"]]


versions().tail(5)

# %% [markdown]
# ## 2. Budgets
#
# As an officer you see every analyst organisation's budget (an analyst sees only its own).
# Budgets are spent, never refunded, and reset at the start of each calendar month (UTC).

# %%
budgets = pd.DataFrame(acme.budget(COLLABORATION)).set_index("org")
display(budgets)

# %% [markdown]
# ## 3. Propose a change, and get it approved
#
# Suppose ACME decides that groups of fewer than 40 customers are too small to report on.
# You propose a new version with `rules.min_group_size: 40`. Because `rules` govern every
# dataset in the collaboration, the change affects BigMart too: it stays **pending** until
# BigMart's officer approves it, and until then the active version keeps governing queries.
# (Your own organisation counts as having approved what you propose.)
#
# Only one proposal may be pending at a time; if an earlier run of this notebook stopped
# half-way, the next cell first withdraws or rejects what it left pending.

# %%
for stale in acme.policy_versions(COLLABORATION):
    if stale["status"] == "pending":
        if stale["proposed_by"] == "acme":
            acme.withdraw_policy(COLLABORATION, stale["version"])
        else:
            acme.reject_policy(COLLABORATION, stale["version"])
        print(f"cleared pending version {stale['version']}")

current_min = yaml.safe_load(demo_policy_text)["rules"]["min_group_size"]
NEW_MIN = 40 if current_min != 40 else 50
stricter = re.sub(r"min_group_size: *\d+", f"min_group_size: {NEW_MIN}", demo_policy_text, count=1)
proposal = acme.put_policy(COLLABORATION, stricter)
print(f"version {proposal['version']} is {proposal['status']}; approvals: {proposal['approvals']}")
print(proposal["diff"])

# %% [markdown]
# The answer shows the diff against the active version: exactly the line you changed. Now
# BigMart's officer reviews it and approves; with every affected owner's approval, the version
# becomes **active** at once, and the previous one is **superseded**.

# %%
approved = bigmart.approve_policy(COLLABORATION, proposal["version"])
print(f"version {approved['version']} is now {approved['status']}")
versions().tail(3)

# %% [markdown]
# ## 4. Refuse a change
#
# BigMart's officer now proposes to raise BigMart's own analysts' budget from 4 to 40 ε a
# month. Budgets are collaboration-wide rules, so ACME must approve too, and you don't: ten
# times the budget means ten times more that BigMart's analysts could learn about the
# customers in ACME's survey. You **reject** it; the active version stays in force.

# %%
active_now = acme.policy_document(COLLABORATION)["document"]
generous = re.sub(r"(bigmart: *\{epsilon: *)[0-9.]+", r"\g<1>40.0", active_now, count=1)
bigmart_proposal = bigmart.put_policy(COLLABORATION, generous)
print(f"BigMart proposed version {bigmart_proposal['version']}: {bigmart_proposal['status']}")
print(bigmart_proposal["diff"])
rejected = acme.reject_policy(COLLABORATION, bigmart_proposal["version"])
print(f"you rejected it: version {rejected['version']} is {rejected['status']}")
print("active version:", acme.policy_document(COLLABORATION)["version"])

# %% [markdown]
# ## 5. Put the demo policy back
#
# So that the other notebooks (and your next run of this one) start from the demo's rules,
# propose the original document again and have BigMart approve it. It becomes a new version:
# history is never rewritten.

# %%
restore = acme.put_policy(COLLABORATION, demo_policy_text)
restored = bigmart.approve_policy(COLLABORATION, restore["version"])
print(f"version {restored['version']} ({restored['status']}) is the demo policy again")
versions().tail(4)

# %% [markdown]
# ## 6. The audit trail
#
# Every upload, policy step and query that touched ACME's data is an **audit event**: who
# (organisation and role), when, what, and the details: for a query, its plan or SQL, the ε
# spent and the policy version, never a data value. Events that touch only BigMart's data are
# not shown to you. The trail is read page by page (`after` = the last sequence number seen).
#
# On a fresh gateway nobody has asked a question yet. Then the next cell has ACME's analyst
# ask one, a count of survey respondents per segment at ε = 0.1, so that the trail shows a
# query. (As with BigMart's officer above, in real life that is someone else, with their own
# key: a compliance key cannot run queries.)


# %%
def all_events(page: int = 500) -> list[dict]:
    events, after = [], 0
    while True:
        batch = acme.audit(COLLABORATION, limit=page, after=after)
        events += batch
        if len(batch) < page:
            return events
        after = batch[-1]["seq"]


events = all_events()
if not any(e["action"] == "query.released" for e in events):
    with GatewayClient(GATEWAY_URL, keys["acme"]["analyst"]) as acme_analyst:
        first = acme_analyst.query(
            COLLABORATION,
            sql="SELECT segment, COUNT(*) AS customers FROM acme.survey GROUP BY segment",
            epsilon=0.1,
        )
    print(f"no query yet: ACME's analyst asked one (ε = {first.epsilon_spent})")
    events = all_events()
trail = pd.DataFrame(
    {
        "seq": e["seq"],
        "at": pd.Timestamp(e["at"]),
        "org": e["actor"]["org"],
        "role": e["actor"]["role"],
        "action": e["action"],
        "ε spent": e["details"].get("epsilon_spent"),
        "outcome": e["details"].get("outcome", ""),
    }
    for e in events
).set_index("seq")
print(f"{len(trail)} events touch ACME's data")
trail.tail(12)

# %%
trail.groupby(["action", "org"]).size().rename("events").to_frame()

# %% [markdown]
# One query's record in full: the question as asked, the ε, the outcome. It is enough to
# reproduce and judge what was asked, and holds nothing about any customer.

# %%
last_query = next(e for e in reversed(events) if e["action"] == "query.released")
print(json.dumps(last_query["details"], indent=2))

# %% [markdown]
# ### Verify the chain
#
# Each event stores the hash of the previous one, and the head of the chain is signed with
# the gateway's Ed25519 key. Changing, removing or re-ordering any event, even in the files
# on disk, breaks the chain from that point; `verify` recomputes all of it and reports the
# first bad event.

# %%
check = acme.verify_audit(COLLABORATION)
print(f"chain ok: {check['ok']}; events checked: {check['events']}")
print(f"first bad event: {check['first_bad']}")

# %% [markdown]
# ## 7. Budget use per analyst organisation over time
#
# The gateway's **ledger** records every charge to a budget. `budget_history` reads it: for
# each analyst organisation and budget period (this month, and earlier months that had
# charges), the cumulative ε spent after each charge (summed per day once there are many).
# It counts every query, not only those in your trail: a query on BigMart's data alone spends
# BigMart's budget too, and one that failed after its budget was reserved stays spent
# (reserved budget is never refunded). The dashed lines are the budgets; each month starts
# again from zero.

# %%
history = acme.budget_history(COLLABORATION)  # per organisation: earlier periods, then this one
this_period = {series["org"]: series for series in history}  # the last series of each org
budgets_now = pd.DataFrame(acme.budget(COLLABORATION)).set_index("org")
now = pd.Timestamp.now(tz="UTC")
palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
colours = {org: palette[i % len(palette)] for i, org in enumerate(budgets_now.index)}

fig, ax = plt.subplots(figsize=(9, 4))
for series in history:
    org, points = series["org"], series["points"]
    if not points:
        continue
    times = [pd.Timestamp(point["at"]) for point in points]
    spent = [point["epsilon_spent"] for point in points]
    ax.plot(times, spent, "o", color=colours[org])
    # From zero just before the first charge, a step per charge, on to the present.
    line_times, line_spent = [times[0], *times], [0.0, *spent]
    if series is this_period[org]:
        line_times, line_spent = [*line_times, now], [*line_spent, spent[-1]]
    label = f"{org} spent" if series is this_period[org] else None
    ax.step(line_times, line_spent, where="post", color=colours[org], label=label)
for org, budget in budgets_now.iterrows():
    ax.axhline(budget["epsilon_total"], color=colours[org], linestyle="--", label=f"{org} budget")
if not any(series["points"] for series in history):
    ax.text(0.5, 0.5, "no query has spent budget yet", ha="center", transform=ax.transAxes)
ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
ax.set_xlabel("time (UTC)")
ax.set_ylabel("cumulative ε in the period")
ax.set_title("Privacy budget spent per analyst organisation")
ax.legend(fontsize="small")
plt.show()

for org, series in this_period.items():
    spent_now = series["points"][-1]["epsilon_spent"] if series["points"] else 0.0
    steps = "charges" if series["bucket"] == "query" else f"{series['bucket']}s with charges"
    print(f"{org} in {series['period']}: ε {spent_now:g} spent; {steps}: {len(series['points'])}")
budgets_now[["epsilon_total", "epsilon_spent", "epsilon_left", "resets_at"]]

# %% [markdown]
# ## What happened
#
# - You read the policy, proposed a stricter rule that became active only once BigMart
#   approved it, refused a change that would have exposed ACME's customers more, and restored
#   the demo policy: every step is a version that stays readable.
# - You read every event that touched ACME's data, checked that the chain is intact, and saw
#   how much each analyst organisation has spent, charge by charge, from the ledger.
# - The same is available from the shell: `insightgw policy …`, `insightgw audit …`,
#   `insightgw budget` (see the README).

# %%
acme.close()
bigmart.close()
print("compliance officer notebook done")
