"""Source of notebooks/retailer_upload.ipynb (build with: python notebooks/build.py)."""

# %% [markdown]
# # Retailer: share your customer table without sharing your customers
#
# You are on **BigMart's data team**. BigMart runs a loyalty programme; ACME, a brand BigMart
# sells, wants to understand the customers the two of you share ("what do my premium
# customers spend at BigMart?"). Neither of you wants to hand over a customer list.
#
# The Insight Gateway sits in between. In this notebook you will:
#
# 1. read what the collaboration's **policy** expects of your table;
# 2. prepare the table: one row per customer;
# 3. **pseudonymise** the customer key on your own machine, with a secret you share with ACME;
# 4. **upload** it, with a progress bar;
# 5. look at the result **from ACME's side**: what your partner can and cannot see.
#
# **Before you start**: run `make run` in the repository (it starts the gateway on
# http://127.0.0.1:8000 with a demo collaboration and writes the demo keys to
# `var/demo-keys.json`). Another gateway or keys file? Set `INSIGHTGW_URL` and
# `INSIGHTGW_KEYS` before starting Jupyter.

# %%
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
from IPython.display import Pretty, display

from clients import GatewayClient, PolicyViolation, pseudonymise_table
from gateway.demo.data import generate_demo_tables  # the demo's stand-in for a CRM export

GATEWAY_URL = os.environ.get("INSIGHTGW_URL", "http://127.0.0.1:8000")
KEYS_FILE = Path(os.environ.get("INSIGHTGW_KEYS", "var/demo-keys.json"))
if not KEYS_FILE.is_absolute() and not KEYS_FILE.exists() and (".." / KEYS_FILE).exists():
    KEYS_FILE = ".." / KEYS_FILE  # Jupyter was started in notebooks/
keys = json.loads(KEYS_FILE.read_text())
COLLABORATION = "acme-bigmart-cx"

bigmart = GatewayClient(GATEWAY_URL, keys["bigmart"]["contributor"])
print("gateway:", bigmart.health())
print("you are:", bigmart.me())

# %% [markdown]
# Every API key belongs to one organisation and one role. Yours is BigMart's **contributor**
# key: it may upload BigMart's datasets, nothing else. It cannot run queries, and it could not
# upload ACME's data even if it tried.
#
# ## 1. What the policy expects of your table
#
# The collaboration's policy, approved by both compliance officers, lists each dataset's
# columns and what each may be used for:
#
# - a **dimension** can be grouped and filtered on; with public `keys` the answer always
#   lists exactly those groups;
# - a **measure** can be aggregated (sum, mean, quantile...) within `bounds`; values outside
#   are clamped, which is what lets the gateway know how much one customer can move a result;
# - a **hidden** column may be uploaded but is dropped on arrival and never used;
# - the **customer key** is what joins your table with ACME's.

# %%
policy = bigmart.policy_document(COLLABORATION)["policy"]
loyalty_rules = policy["datasets"]["bigmart.loyalty"]
print("customer key column:", loyalty_rules["customer_key"])
print("rows per customer:  ", loyalty_rules.get("max_rows_per_unit", 1))
pd.DataFrame(
    [
        {
            "column": name,
            "use": rule["use"],
            "type": rule.get("type", "string" if rule["use"] == "dimension" else ""),
            "public keys or bounds": rule.get("keys") or rule.get("bounds") or "",
            "aggregates": ", ".join(rule.get("aggregates", [])),
        }
        for name, rule in loyalty_rules["columns"].items()
    ]
)

# %% [markdown]
# ## 2. Prepare the customer table
#
# In real life this is an export from your CRM. Here the demo's generator stands in for it:
# it produces the same BigMart customers the gateway was seeded with, so the numbers your
# partner sees stay comparable. As the owner, you may see how many rows your current version
# holds (ACME may not).

# %%
mine = next(d for d in bigmart.datasets(COLLABORATION)["datasets"] if d["id"] == "bigmart.loyalty")
customers = mine["rows"]
print(f"bigmart.loyalty is at version {mine['version']} with {customers:,} customers")

demo = generate_demo_tables(customers=customers)
loyalty = demo.loyalty.to_pandas()
loyalty.head()

# %% [markdown]
# This table never leaves your machine as it is. Two things happen before the upload.
#
# **Data minimisation.** The policy hides `email`: the gateway would drop it on arrival,
# but it is better never to send it at all.

# %%
hidden = [name for name, rule in loyalty_rules["columns"].items() if rule["use"] == "hidden"]
loyalty = loyalty.drop(columns=hidden)
print("dropped before upload:", hidden)

# %% [markdown]
# ## 3. Pseudonymise the customer key, on your side
#
# **Pseudonymisation** replaces each customer key by `HMAC-SHA256(secret, key)`: a 64-character
# token that is always the same for the same customer and secret, but from which nobody
# without the secret can get back to the key, nor check a guessed key against it.
#
# - **Why a shared secret?** ACME pseudonymises its survey with the same secret, so a customer
#   who is in both tables gets the same token on both sides, and the gateway can join the two
#   tables on tokens. The raw key never leaves either company.
# - **And then?** The gateway re-keys whatever arrives with its own secret, one per
#   collaboration, and stores only that second token. Tokens are never returned to anyone.
# - **Agree the text form** of the key with your partner: `"C0001234"` and `"1234"` are
#   different customers to a hash.
#
# The demo does not come with a shared secret, so this notebook defines one. In real life,
# one partner creates it once with `secrets.token_bytes(32)` and gives it to the other by a
# channel the gateway is not part of; it is never sent to the gateway.

# %%
SHARED_SECRET = bytes.fromhex(
    os.environ.get(
        "INSIGHTGW_SHARED_SECRET",
        "5c1d0b6e7a2f4938b1e0c6d2a9f3b7e48d2c6a1f0e9b3d7c5a4f8e2b6d1c0a93",
    )
)
key_column = loyalty_rules["customer_key"]
before = loyalty[key_column].head(3).tolist()
loyalty = pseudonymise_table(loyalty, key_column, SHARED_SECRET)
pd.DataFrame({"raw key (stays here)": before, "token (uploaded)": loyalty[key_column].head(3)})

# %% [markdown]
# ## 4. Upload, with a progress bar
#
# The SDK streams the file to the gateway in 64 KiB chunks, so even a large table never sits
# whole in memory, and calls `progress(bytes_sent)` after each chunk. The gateway checks the
# table against the policy (a missing or unknown column, a wrong type: the upload is refused
# and nothing is stored), replaces the key by its own token, records how many rows each
# customer has, and stores the result encrypted. Uploading again creates a **new version**;
# queries always use the newest.


# %%
class ProgressBar:
    """A text progress bar that redraws in place."""

    def __init__(self, total: int, width: int = 40) -> None:
        self.total, self.width = total, width
        self.handle = display(Pretty(self._text(0)), display_id=True)

    def _text(self, sent: int) -> str:
        done = round(self.width * sent / self.total) if self.total else self.width
        bar = "#" * done + "." * (self.width - done)
        return f"[{bar}] {sent / self.total:6.1%}  {sent:,} of {self.total:,} bytes"

    def __call__(self, sent: int) -> None:
        self.handle.update(Pretty(self._text(sent)))


workdir = Path(tempfile.mkdtemp(prefix="bigmart-upload-"))
upload_file = workdir / "loyalty.parquet"
loyalty.to_parquet(upload_file, index=False)

answer = bigmart.upload(
    COLLABORATION, "loyalty", upload_file, progress=ProgressBar(upload_file.stat().st_size)
)
print(f"uploaded {answer['dataset']} version {answer['version']}: {answer['rows']:,} rows")
display(answer)

# %% [markdown]
# ### ACME does the same on its side
#
# The join only matches if ACME's survey was pseudonymised with the same secret. ACME's data
# team would run the two cells above on their survey (key column `customer_id`) and upload it
# with ACME's contributor key. So that the demo's joint questions keep working, this notebook
# does it for them, with the demo's ACME contributor key. In production you would never hold
# another company's key.

# %%
acme_contributor = GatewayClient(GATEWAY_URL, keys["acme"]["contributor"])
survey_rules = policy["datasets"]["acme.survey"]
survey = demo.survey.to_pandas()
survey = survey.drop(
    columns=[n for n, r in survey_rules["columns"].items() if r["use"] == "hidden"]
)
survey = pseudonymise_table(survey, survey_rules["customer_key"], SHARED_SECRET)
survey_answer = acme_contributor.upload(COLLABORATION, "survey", survey)
print(f"ACME uploaded {survey_answer['dataset']} version {survey_answer['version']}")

# %% [markdown]
# ## 5. What your partner can see
#
# Now look through ACME's eyes, with ACME's **analyst** key. Compare what the dataset listing
# tells the owner (you) and the partner:

# %%
acme_analyst = GatewayClient(GATEWAY_URL, keys["acme"]["analyst"])


def loyalty_entry(client: GatewayClient) -> dict:
    listing = client.datasets(COLLABORATION)["datasets"]
    return next(d for d in listing if d["id"] == "bigmart.loyalty")


owner_view, partner_view = loyalty_entry(bigmart), loyalty_entry(acme_analyst)
invisible = [c for c in loyalty_rules["columns"] if c not in partner_view["columns"]]
print("version both see:       ", owner_view["version"], partner_view["version"])
print("columns ACME can use:   ", ", ".join(partner_view["columns"]))
print("columns ACME never sees:", ", ".join(invisible))
print("shown to you only:      ", {k: v for k, v in owner_view.items() if k not in partner_view})

# %% [markdown]
# The partner sees the schema the policy exposes: no hidden column, no exact row count, and
# never a row or a token. All it can do is ask **aggregate** questions, and each answer comes
# with differential-privacy noise that hides whether any one customer is in your table.
#
# Here ACME's analyst asks for something the policy forbids, grouping by the hidden `email`
# column. The gateway refuses, names the policy rule, and spends nothing:

# %%
[budget_before] = acme_analyst.budget(COLLABORATION)
try:
    acme_analyst.query(
        COLLABORATION,
        sql="SELECT email, COUNT(*) AS n FROM bigmart.loyalty GROUP BY email",
        epsilon=0.1,
    )
except PolicyViolation as refusal:
    print("refused:", refusal.code, "-", refusal.message)
[budget_after] = acme_analyst.budget(COLLABORATION)
spent = (budget_before["epsilon_spent"], budget_after["epsilon_spent"])
print("ACME's budget spent before and after the refusal:", *spent)

# %% [markdown]
# What *can* ACME learn? Before spending anything it can ask the gateway what a question
# would cost and how precise the answer would be (`explain` is free). For a count of your
# shared customers per region at ε = 0.2:

# %%
JOINT_COUNT = """
SELECT l.region, COUNT(*) AS customers
FROM bigmart.loyalty AS l JOIN acme.survey AS s ON l.customer_key = s.customer_id
GROUP BY l.region
"""
explained = acme_analyst.explain(COLLABORATION, sql=JOINT_COUNT, epsilon=0.2).raw
[count_error] = [a["ci95_halfwidth"] for a in explained["aggregates"] if a["as"] == "customers"]
print(
    f"ε = {explained['epsilon']}: each regional count would be within ±{count_error} "
    "customers, 95% of the time"
)
print("groups released:", explained["groups"], "(the policy's public region keys)")

# %% [markdown]
# Finally, a check from BigMart's own analyst (BigMart has its own budget) that the join
# still matches after both re-uploads: about half of the demo's customers are in both
# tables, so the noisy count of shared customers should be about half of yours.

# %%
bigmart_analyst = GatewayClient(GATEWAY_URL, keys["bigmart"]["analyst"])
shared = bigmart_analyst.query(
    COLLABORATION,
    sql="SELECT COUNT(*) AS customers FROM bigmart.loyalty AS l "
    "JOIN acme.survey AS s ON l.customer_key = s.customer_id",
    epsilon=0.1,
)
frame = shared.to_pandas()
value = frame.loc[0, "customers"]
low, high = frame.loc[0, "customers_ci95_low"], frame.loc[0, "customers_ci95_high"]
print(f"shared customers: about {value:,} of your {customers:,}")
print(f"95% interval: {low:,.0f} to {high:,.0f}")
print(f"cost to BigMart's budget: ε = {shared.epsilon_spent}")
print(f"left this month: ε = {shared.budget['epsilon_left']}")

# %% [markdown]
# ## What happened
#
# - Your raw customer keys and e-mails never left this notebook; the gateway holds an
#   encrypted table keyed by its own tokens.
# - ACME sees the schema the policy allows and noisy aggregates with error bars, charged to
#   its privacy budget; refusals cost nothing and are audited.
# - Next: the **brand_analyst** notebook asks ACME's questions; the **compliance_officer**
#   notebook reads the audit trail of everything that touched your data.

# %%
for client in (bigmart, acme_contributor, acme_analyst, bigmart_analyst):
    client.close()
print("retailer notebook done")
