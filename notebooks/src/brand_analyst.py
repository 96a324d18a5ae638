"""Source of notebooks/brand_analyst.ipynb (build with: python notebooks/build.py)."""

# %% [markdown]
# # Brand analyst: ask joint questions, get answers with error bars
#
# You are an **analyst at ACME**, a brand. ACME's survey knows each respondent's segment and
# satisfaction; BigMart, a retailer, knows what its loyalty customers spend and how likely they
# are to recommend the store (NPS). Together the two tables answer questions neither can alone:
# *how much do ACME's premium customers spend at BigMart, region by region?*
#
# You will never see a row of either table. You ask **aggregate** questions in SQL; the gateway
# answers with **differentially private** values: each one has random noise added, and comes
# with a 95% interval that tells you how much to trust it. In this notebook you will:
#
# 1. see what you may ask about;
# 2. learn what **ε** (epsilon) is, and read the cost and accuracy of a question *before*
#    spending anything;
# 3. run a joint query in SQL and plot it with error bars;
# 4. see why asking again is free;
# 5. watch your privacy budget.
#
# **Before you start**: `make run` in the repository starts the gateway on
# http://127.0.0.1:8000 with the demo collaboration; set `INSIGHTGW_URL` and `INSIGHTGW_KEYS`
# to use another gateway or keys file.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from clients import BudgetExceeded, GatewayClient

GATEWAY_URL = os.environ.get("INSIGHTGW_URL", "http://127.0.0.1:8000")
KEYS_FILE = Path(os.environ.get("INSIGHTGW_KEYS", "var/demo-keys.json"))
if not KEYS_FILE.is_absolute() and not KEYS_FILE.exists() and (".." / KEYS_FILE).exists():
    KEYS_FILE = ".." / KEYS_FILE  # Jupyter was started in notebooks/
keys = json.loads(KEYS_FILE.read_text())
COLLABORATION = "acme-bigmart-cx"

acme = GatewayClient(GATEWAY_URL, keys["acme"]["analyst"])
print("you are:", acme.me())

# %% [markdown]
# ## 1. What you may ask about
#
# The policy both companies' compliance officers approved says which columns you may group
# by (**dimensions**; those with public keys always come back with exactly those groups) and
# which you may aggregate (**measures**, with the aggregates allowed and the bounds every value
# is clamped to). Hidden columns are not even listed.

# %%
listing = acme.datasets(COLLABORATION)
pd.DataFrame(
    [
        {
            "dataset": dataset["id"],
            "column": name,
            "use": column["use"],
            "keys or bounds": column.get("keys") or column.get("bounds") or "private keys",
            "aggregates": ", ".join(column.get("aggregates", [])),
        }
        for dataset in listing["datasets"]
        for name, column in dataset["columns"].items()
    ]
)

# %% [markdown]
# ## 2. ε: what a question costs
#
# Differential privacy promises each customer that the answers would be almost the same
# whether or not they were in the data. **ε** measures "almost": the smaller ε, the more noise
# and the stronger the promise. Every answer spends some ε, and the answers add up, so each
# analyst organisation has a **budget** of ε per month set by the policy. When it is used up,
# the gateway refuses further questions until the next month.
#
# Your budget now:

# %%
[budget_at_start] = acme.budget(COLLABORATION)
pd.Series(budget_at_start)

# %% [markdown]
# ### Explain before you spend
#
# `explain` tells you, for free, how precise an answer would be at a given ε: the expected
# half-width of each value's 95% interval. Our question: customers, average BigMart spend and
# average NPS of the customers both companies share, by BigMart region and ACME segment.

# %%
QUESTION = """
SELECT l.region, s.segment,
       COUNT(*)         AS customers,
       AVG(l.spend_90d) AS avg_spend,
       AVG(l.nps_score) AS avg_nps
FROM bigmart.loyalty AS l
JOIN acme.survey AS s ON l.customer_key = s.customer_id
GROUP BY l.region, s.segment
"""

rows = []
for epsilon in (0.1, 0.25, 0.5, 1.0):
    explanation = acme.explain(COLLABORATION, sql=QUESTION, epsilon=epsilon).raw
    error = {a["as"]: a for a in explanation["aggregates"]}
    spend = error["avg_spend"]["ci95_halfwidth_at_group_size"]
    nps = error["avg_nps"]["ci95_halfwidth_at_group_size"]
    rows.append(
        {
            "ε": epsilon,
            "customers ±": error["customers"]["ci95_halfwidth"],
            "avg_spend ± (group of 100)": spend["100"],
            "avg_spend ± (group of 1,000)": spend["1000"],
            "avg_nps ± (group of 1,000)": nps["1000"],
        }
    )
print(f"groups in the answer: {explanation['groups']}; each customer is in at most one")
pd.DataFrame(rows).set_index("ε")

# %% [markdown]
# Read the table as a price list:
#
# - **Twice the ε, half the noise.** A count's interval shrinks in proportion to 1/ε.
# - **Big groups are precise, small ones are not.** A mean is a noisy sum divided by a noisy
#   count, so its error also shrinks with the group's size. Ask broad questions first.
# - The ε of a query is split between the statistics it needs (here one count and two sums):
#   every extra aggregate makes each one a little noisier.
#
# You can also start from the precision you need and let the gateway pick the smallest ε that
# achieves it (still free to ask):

# %%
COUNT_BY_REGION = """
SELECT l.region, COUNT(*) AS customers
FROM bigmart.loyalty AS l JOIN acme.survey AS s ON l.customer_key = s.customer_id
GROUP BY l.region
"""
for target in (50, 20, 10):
    cost = acme.explain(COLLABORATION, sql=COUNT_BY_REGION, accuracy={"abs": target})
    print(f"counts within ±{target} customers need ε = {cost.epsilon}")

# %% [markdown]
# ## 3. Run the joint query
#
# We take ε = 0.5: the table above says how precise that is. The gateway reserves the ε in
# its ledger *before* it draws any noise, runs the join on pseudonymous tokens, clamps every
# value to the policy's bounds, adds noise, and returns only the noisy results.

# %%
release = acme.query(COLLABORATION, sql=QUESTION, epsilon=0.5)
print(f"query {release.query_id} ran under policy version {release.policy_version}")
print(f"spent ε = {release.epsilon_spent}; left this month: ε = {release.budget['epsilon_left']}")
results = release.to_pandas()
display(results)

# %% [markdown]
# Each aggregate comes as three columns: the noisy **value**, and the two ends of its **95%
# interval** (`…_ci95_low`, `…_ci95_high`): with 95% probability the exact value, which
# nobody outside the gateway sees, lies between them. Never read a noisy value without its
# interval: two groups whose intervals overlap may well be the same.
#
# A group whose *noisy* count falls under the policy's minimum group size is still listed
# (the region and segment names are public) but **suppressed**: its values are withheld.

# %%
print("suppressed groups:", int(results["suppressed"].sum()), "of", len(results))
results[~results["suppressed"]].sort_values("avg_spend", ascending=False).head(5)[
    ["region", "segment", "customers", "avg_spend", "avg_spend_ci95_low", "avg_spend_ci95_high"]
]

# %% [markdown]
# ### Plot with error bars
#
# `Release.plot` draws a bar per group, grouped by the first group-by column and coloured by
# the second, with the 95% intervals as error bars.

# %%
fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
release.plot("avg_spend", ax=axes[0])
release.plot("avg_nps", ax=axes[1])
fig.tight_layout()
plt.show()

# %% [markdown]
# Questions can also be sent as a JSON **plan**, which offers what SQL does not express, such
# as a histogram over the bins the policy fixes. Here: how BigMart spend is distributed for
# each ACME segment, at ε = 0.25.

# %%
SPEND_HISTOGRAM = {
    "from": "bigmart.loyalty",
    "join": ["acme.survey"],
    "group_by": ["segment"],
    "aggregates": [{"fn": "histogram", "column": "spend_90d", "as": "spend_90d"}],
}
histogram = acme.query(COLLABORATION, plan=SPEND_HISTOGRAM, epsilon=0.25)
ax = histogram.plot("spend_90d")
ax.set_ylabel("customers")
plt.show()

# %% [markdown]
# A noisy count can come out slightly negative for a nearly empty bin: the noise is symmetric
# and the gateway does not round it away (that would bias the total). The interval around it
# says what it means: "about zero".

# %% [markdown]
# ## 4. Asking again is free, and gives the same answer
#
# If you could ask the same question many times, you could average the noise away. So the
# gateway stores every release: the same question (same query, ε, policy and data versions)
# returns the stored answer, marked as a **replay**, at no cost.

# %%
again = acme.query(COLLABORATION, sql=QUESTION, epsilon=0.5)
print("replay:", again.replay, "| ε spent:", again.epsilon_spent)
print("same query id:", again.query_id == release.query_id)
print("same values:", again.rows == release.rows)

# %% [markdown]
# ## 5. Watch your budget
#
# The release told you what was left after each query; `budget` shows where you stand, and
# when the budget resets.

# %%
[budget_now] = acme.budget(COLLABORATION)
spent_here = budget_now["epsilon_spent"] - budget_at_start["epsilon_spent"]
print(f"this notebook spent ε = {spent_here:g}; resets at {budget_now['resets_at']}")

fig, ax = plt.subplots(figsize=(8, 2.2))
ax.barh(["ACME"], [budget_at_start["epsilon_spent"]], color="grey", label="spent before")
ax.barh(
    ["ACME"],
    [spent_here],
    left=[budget_at_start["epsilon_spent"]],
    color="tab:red",
    label="spent in this notebook",
)
ax.barh(
    ["ACME"],
    [budget_now["epsilon_left"]],
    left=[budget_now["epsilon_spent"]],
    color="tab:green",
    alpha=0.4,
    label="left",
)
ax.set_xlim(0, budget_now["epsilon_total"])
ax.set_xlabel("ε this month")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=3, fontsize="small")
fig.tight_layout()
plt.show()

# %% [markdown]
# When a question would cost more than what is left, the gateway refuses it with
# `BudgetExceeded` (HTTP 429) and spends nothing; the SDK never retries such a refusal,
# because waiting does not refill a budget before the month ends. Guard long scripts like this:


# %%
def ask(sql: str, epsilon: float):
    """Run a query, or say why the budget does not allow it."""
    try:
        return acme.query(COLLABORATION, sql=sql, epsilon=epsilon)
    except BudgetExceeded as refusal:
        print("not enough budget left:", refusal.message)
        return None


answer = ask(QUESTION, 0.5)  # asked above, so this one is a free replay
print("replay:", answer.replay if answer else None)

# %% [markdown]
# ## What happened
#
# - You saw cost and accuracy before spending, ran a joint SQL query over two companies'
#   tables, and plotted noisy answers with their 95% intervals.
# - Repeating a question was free and gave the same answer; refusals cost nothing.
# - Everything you did is in the audit trail the compliance officers read: see the
#   **compliance_officer** notebook.

# %%
acme.close()
print("brand analyst notebook done")
