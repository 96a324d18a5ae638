"""Errors and logs carry no data: a canary sent through every bad-input path never comes back.

Each case puts a random per-run canary (``canary<16 hex>``, lower case so that it is also a
valid id, dataset or column name and reaches the deeper checks) into one user-controlled input
of one endpoint: a cell value, a column, dataset, collaboration or organisation name, a key
role, a policy document, SQL text, a plan field, ε, a header, a path or a query parameter. Then
nothing the gateway produced may hold it: no response body or header, no log record of any
logger at DEBUG (message, arguments, exception text), nothing written to stdout or stderr, and
no audit event either data owner's compliance officer can read.

The rule is strict on purpose: a refusal says *where* the problem is (field path, column
number, line and column) and never repeats *what* was sent, since what was sent may be data.
Two things are exempt, each by an explicit check:

- The audit records each caller's own request by design (``test_int_audit_content.py``): a
  query event its plan, SQL text and the datasets it named, an upload event the dataset named
  in the URL. Those details are shown only to the caller's organisation and to the owners of the
  datasets named, and are left out of the scan; every other detail (the refusal message above
  all) is scanned.
- A name that a proposed policy itself defines (a dataset, a column, a budget's organisation)
  may appear in the path that locates an error in that proposal, and nowhere else.
- An unknown field of a JSON body or a policy document is refused naming the object that holds
  it and the fields it allows, never the unknown name itself.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as paipc
import pyarrow.parquet as pq
import pytest
import yaml

from gateway.demo.seed import POLICY_FILE

DEMO = "acme-bigmart-cx"
BASE = f"/v1/collaborations/{DEMO}"
PARQUET = "application/vnd.apache.parquet"
CSV = "text/csv"
ARROW = "application/vnd.apache.arrow.stream"
ROWS = 40
CANARY = f"canary{secrets.token_hex(8)}"
"""Random per run, so no fixed string in the code can make the test pass by accident."""
LOGGERS = ("gateway", "uvicorn", "uvicorn.error", "uvicorn.access", "fastapi", "starlette")
CLIENT_LOGGERS = ("httpx", "httpcore")
"""The test's own HTTP client logs the URLs it calls; that is not the gateway speaking."""
AUDIT_REQUEST_FIELDS = {"query": ("plan", "sql", "datasets"), "dataset": ("dataset", "datasets")}
"""Audit details that record the caller's own request, by action family (module docstring)."""


def holds_canary(text: str) -> bool:
    """Also finds the canary's random part alone (e.g. after a case change or a split)."""
    lowered = text.lower()
    return CANARY in lowered or CANARY[len("canary") :] in lowered


class LogSink(logging.Handler):
    """Every record of every logger, rendered in full."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in CLIENT_LOGGERS:
            return
        parts = [record.name, str(record.msg), repr(record.args)]
        try:
            parts.append(record.getMessage())
        except Exception:  # a broken format string must not hide the raw parts
            parts.append("<unformattable>")
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        if record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(record.stack_info)
        self.texts.append(" | ".join(parts))


@pytest.fixture
def log_sink() -> Iterator[LogSink]:
    """Every logger at DEBUG into one sink: the root's, and any that does not propagate."""
    sink = LogSink()
    root = logging.getLogger()
    saved = [(root, root.level, root.disabled)]
    root.setLevel(logging.DEBUG)
    root.addHandler(sink)
    attached = [root]
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.disabled))
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        if not logger.propagate:
            logger.addHandler(sink)
            attached.append(logger)
    try:
        yield sink
    finally:
        for logger in attached:
            logger.removeHandler(sink)
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled


@dataclass
class Probe:
    """Sends the requests of one case and keeps every response for the scan."""

    api: Any
    keys: dict[str, Any]
    loyalty: pa.Table
    seen: list[httpx.Response] = field(default_factory=list)

    def call(self, method: str, path: str, who: str | None = None, **kw: Any) -> httpx.Response:
        response: httpx.Response = self.api.request(method, path, self.key(who), **kw)
        assert response.status_code < 500, (method, path, response.status_code)
        self.seen.append(response)
        return response

    def key(self, who: str | None) -> str | None:
        if who is None:
            return None
        if who == "admin":
            return str(self.keys["admin"])
        org, role = who.split(".")
        return str(self.keys[org][role])

    def upload(
        self, body: bytes, content_type: str = CSV, name: str = "loyalty", collab: str = DEMO
    ) -> httpx.Response:
        return self.call(
            "POST",
            f"/v1/collaborations/{collab}/datasets/{name}",
            "bigmart.contributor",
            content=body,
            headers={"Content-Type": content_type},
        )

    def query(self, body: Any, explain: bool = True, who: str = "acme.analyst") -> None:
        """Ask ``body`` as a query and (unless told otherwise) as an explain."""
        self.call("POST", f"{BASE}/queries", who, json=body)
        if explain:
            self.call("POST", f"{BASE}/queries/explain", who, json=body)

    def plan(self, explain: bool = True, epsilon: Any = 0.1, **parts: Any) -> None:
        plan = {"from": "bigmart.loyalty", "aggregates": [{"fn": "count", "as": "n"}]}
        self.query({"plan": {**plan, **parts}, "epsilon": epsilon}, explain)

    def sql(self, text: str) -> None:
        self.query({"sql": text, "epsilon": 0.1})

    def policy(self, text: str, content_type: str = "application/yaml") -> httpx.Response:
        return self.call(
            "PUT",
            f"{BASE}/policy",
            "acme.compliance",
            content=text.encode(),
            headers={"Content-Type": content_type},
        )


# ---- upload bodies ------------------------------------------------------------------------


def csv_of(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    return buffer.getvalue()


def parquet_of(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def arrow_of(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with paipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def with_cell(table: pa.Table, column: str, value: Any, row: int = 7) -> pa.Table:
    """``table`` with one cell of ``column`` replaced (the column becomes text if needed)."""
    values = table[column].to_pylist()
    kind = table.schema.field(column).type
    if isinstance(value, str):
        values = [None if v is None else str(v) for v in values]
        kind = pa.string()
    values[row] = value
    index = table.column_names.index(column)
    return table.set_column(index, column, pa.array(values, kind))


def renamed(table: pa.Table, old: str, new: str) -> pa.Table:
    return table.rename_columns([new if n == old else n for n in table.column_names])


def csv_with_line(table: pa.Table, line: bytes) -> bytes:
    return csv_of(table) + line + b"\n"


# ---- policy documents ---------------------------------------------------------------------


def demo_policy() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(POLICY_FILE.read_text())
    return document


def policy_yaml(edit: Callable[[dict[str, Any]], None]) -> str:
    document = demo_policy()
    edit(document)
    return yaml.safe_dump(document, sort_keys=False)


def loyalty_columns(doc: dict[str, Any]) -> dict[str, Any]:
    columns: dict[str, Any] = doc["datasets"]["bigmart.loyalty"]["columns"]
    return columns


# ---- the cases ----------------------------------------------------------------------------

Case = Callable[[Probe], None]
C = CANARY


def uploads_with_canary_values(p: Probe) -> None:
    t = p.loyalty
    p.upload(csv_of(with_cell(t, "spend_90d", C)))  # text in a float measure
    p.upload(csv_of(with_cell(t, "visits_90d", C)))  # text in an int measure
    p.upload(parquet_of(with_cell(t, "nps_score", C)), PARQUET)
    p.upload(arrow_of(with_cell(t, "spend_90d", C)), ARROW)
    p.upload(csv_of(with_cell(t, "region", C)))  # not one of the public keys
    p.upload(csv_of(with_cell(t, "channel", f"{C}\x00")))  # NUL in a text value
    p.upload(csv_of(with_cell(t, "email", C)))  # hidden: dropped
    p.upload(csv_of(with_cell(with_cell(t, "customer_key", C, 3), "customer_key", C, 4)))
    p.upload(csv_of(with_cell(t, "customer_key", None)) + f"{C},,,,,,,\n".encode())
    p.upload(csv_with_line(t, f"{C},north,S001,store,1.0,1,5,{C}@example.com,extra".encode()))
    p.upload(csv_with_line(t, f"{C},n\xf6rth,S001,store,1.0,1,5,x".encode("latin-1")))
    p.upload(csv_with_line(t, f'"{C},north'.encode()))  # an unclosed quote
    p.upload(csv_of(t)[:-20] + f"\x00{C}".encode())
    p.upload(f"{C}".encode().join([b"\xff\xfe"] * 4), CSV)
    p.upload(f"{C}\n".encode() * 3)
    p.upload(f"PAR1{C}PAR1".encode(), PARQUET)
    p.upload(parquet_of(t)[:-12] + C.encode()[:4] + b"PAR1", PARQUET)
    p.upload(f"\xff\xff\xff\xff{C}".encode("latin-1"), ARROW)


def uploads_with_canary_columns(p: Probe) -> None:
    t = p.loyalty
    p.upload(csv_of(t.append_column(C, t["region"])))  # unknown column
    p.upload(parquet_of(t.append_column(C, t["region"])), PARQUET)
    p.upload(arrow_of(t.append_column(C, t["region"])), ARROW)
    p.upload(csv_of(renamed(t, "region", C)))  # unknown, and region missing
    p.upload(csv_of(renamed(t, "customer_key", C)))  # the customer key missing
    p.upload(parquet_of(renamed(t, "email", C)), PARQUET)  # instead of a hidden column
    p.upload(f"{C},{C}\n1,2\n".encode())  # a repeated column name
    p.upload(csv_of(t).replace(b"region", f"region{C}".encode(), 1))
    p.upload(csv_of(t).replace(b"region", f'"{C}'.encode(), 1))  # an unclosed quoted name
    meta = t.replace_schema_metadata({C: C})
    p.upload(parquet_of(meta.drop_columns(["region"])), PARQUET)
    wide = t.drop_columns(["region"])
    for i in range(12):
        wide = wide.append_column(f"{C}{i}", t["region"])
    p.upload(csv_of(wide))  # too many columns
    p.upload(parquet_of(wide), PARQUET)


def uploads_with_canary_names(p: Probe) -> None:
    body = csv_of(p.loyalty)
    p.upload(body, name=C)  # a dataset the policy does not describe
    p.upload(body, name=f"{C}.x")  # not a valid name
    p.upload(body, name=f"loyalty{C}")
    p.upload(body, content_type=f"text/{C}")  # unsupported media type
    p.upload(body, content_type=f"text/csv; charset={C}")
    p.upload(b"", content_type=f"application/{C}")
    p.upload(body, collab=C)  # no such collaboration


def collaboration_ids(p: Probe) -> None:
    base = f"/v1/collaborations/{C}"
    for who in ("admin", "acme.analyst", "acme.compliance", "bigmart.contributor"):
        for suffix in ("", "/datasets", "/policy", "/policy/versions", "/budget", "/audit"):
            p.call("GET", base + suffix, who)
        p.call("GET", base + "/audit/verify", who)
        p.call("GET", base + "/policy/versions/1", who)
    p.call("POST", base + "/queries", "acme.analyst", json={"sql": "SELECT 1", "epsilon": 0.1})
    p.call("POST", base + "/queries/explain", "acme.analyst", json={"sql": "x", "epsilon": 1})
    p.call(
        "PUT",
        base + "/policy",
        "acme.compliance",
        content=policy_yaml(lambda d: d.update(collaboration=C)).encode(),
        headers={"Content-Type": "application/yaml"},
    )
    for action in ("approve", "reject", "withdraw"):
        p.call("POST", f"{base}/policy/versions/1/{action}", "acme.compliance")


def admin_inputs(p: Probe) -> None:
    p.call("POST", "/v1/orgs", "admin", json={"id": C, "name": C, "kind": C})
    p.call("POST", "/v1/orgs", "admin", json={"id": f"{C}!", "name": "x", "kind": "partner"})
    p.call("POST", "/v1/orgs", "admin", json={"id": "acme", "name": C, "kind": "brand"})
    p.call("POST", "/v1/orgs", "admin", json={"id": "x1", "name": C * 40, "kind": "brand"})
    p.call("POST", "/v1/orgs", "admin", json={"id": ["x"], "name": {C: C}, "kind": [C]})
    p.call("POST", "/v1/orgs", "acme.analyst", json={"id": C, "name": C, "kind": "brand"})
    p.call("POST", f"/v1/orgs/{C}/keys", "admin", json={"role": "analyst"})
    p.call("POST", "/v1/orgs/acme/keys", "admin", json={"role": C})
    p.call("POST", "/v1/orgs/acme/keys", "admin", json={"role": [C]})
    p.call("POST", "/v1/orgs/acme/keys", "admin", content=f'{{"role": "{C}'.encode())
    collab = {"id": C, "name": C, "members": ["acme", C]}
    p.call("POST", "/v1/collaborations", "admin", json=collab)
    p.call("POST", "/v1/collaborations", "admin", json={**collab, "members": ["acme", "acme"]})
    p.call("POST", "/v1/collaborations", "admin", json={**collab, "members": [f"{C}!", "acme"]})
    p.call("POST", "/v1/collaborations", "admin", json={**collab, "id": f"{C}!"})
    p.call("POST", "/v1/collaborations", "admin", json={**collab, "members": [C]})
    p.call("POST", "/v1/collaborations", "admin", json={"id": DEMO, "name": C, "members": []})


def policy_documents(p: Probe) -> None:
    """Values, comments and YAML or JSON syntax errors holding the canary."""
    p.policy(policy_yaml(lambda d: loyalty_columns(d)["region"].update(keys=[C, C])))
    p.policy(policy_yaml(lambda d: loyalty_columns(d)["region"].update(use=C)))
    p.policy(policy_yaml(lambda d: loyalty_columns(d)["region"].update(type=C)))
    p.policy(policy_yaml(lambda d: loyalty_columns(d)["spend_90d"].update(bounds=[C, 1])))
    p.policy(policy_yaml(lambda d: loyalty_columns(d)["spend_90d"].update(aggregates=[C])))
    p.policy(policy_yaml(lambda d: loyalty_columns(d)["spend_90d"].update(bins=[0, C])))
    p.policy(policy_yaml(lambda d: d["privacy"].update(mechanism=C)))
    p.policy(policy_yaml(lambda d: d["privacy"].update(delta=C)))
    p.policy(policy_yaml(lambda d: d["budgets"]["acme"].update(period=C)))
    p.policy(policy_yaml(lambda d: d["budgets"]["acme"].update(epsilon=C)))
    p.policy(policy_yaml(lambda d: d["datasets"]["bigmart.loyalty"].update(owner=C)))
    p.policy(policy_yaml(lambda d: d["datasets"]["bigmart.loyalty"].update(customer_key=[C])))
    p.policy(policy_yaml(lambda d: d["datasets"]["bigmart.loyalty"].update(kind=C)))
    p.policy(policy_yaml(lambda d: d["datasets"]["bigmart.loyalty"].update(max_rows_per_unit=C)))
    p.policy(policy_yaml(lambda d: d.update(joins=[["bigmart.loyalty", C, C]])))
    p.policy(policy_yaml(lambda d: d.update(collaboration=C)))
    p.policy(policy_yaml(lambda d: d["rules"].update(min_group_size=C)))
    described = policy_yaml(lambda d: d["privacy"].update(delta=-1))
    p.policy(f"# {C} describes this policy\n{described}")
    p.policy(described.replace("privacy:", f"privacy:  # {C}", 1))
    good = POLICY_FILE.read_text()
    p.policy(good + f"\n{C}: [unclosed\n")  # YAML syntax errors on a line with the canary
    p.policy(good + f"\n  {C}: 1\n bad: {C}\n")
    p.policy(good + f"\nrules: *{C}\n")  # an undefined alias
    p.policy(good.replace("rules:", f"rules: !{C}", 1))  # an unknown tag
    p.policy(good + f"\n{C}: '{C}\n")
    p.policy(good + f"\n{C}:\t{C}\n")
    p.policy(good + f"\n{C}: {C}: {C}\n")
    p.policy(good + f'\nrules: "\\q{C}"\n')  # an unknown escape
    p.policy(good.replace("acme:", f"acme: {{epsilon: {C}", 1))
    p.policy(good.replace("laplace", f"&{C} laplace", 1).replace("month}", f"month, <<: *{C}}}"))
    p.policy(f"{C}")
    p.policy(f"[{C}]")
    p.policy(f'{{"privacy": {{"mechanism": "{C}"}}}}', "application/json")
    p.policy(f'{{"collaboration": "{C}", ', "application/json")
    p.policy(f'{{"privacy": {C}}}', "application/json")
    p.policy(f'{{"privacy": "\\u{C}"}}', "application/json")
    p.policy(good, f"application/{C}")
    p.call(
        "PUT",
        f"{BASE}/policy",
        "acme.compliance",
        content=b"\xff\xfe" + C.encode(),
        headers={"Content-Type": "application/yaml"},
    )
    p.call("PUT", f"{BASE}/policy", "acme.analyst", content=C.encode())


def sql_texts(p: Probe) -> None:
    p.sql(f"SELECT COUNT(*) FROM bigmart.{C}")
    p.sql(f"SELECT COUNT(*) FROM {C}.loyalty")
    p.sql(f'SELECT COUNT(*) FROM "{C}"')
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty JOIN acme.{C} ON customer_key = customer_id")
    p.sql(f"SELECT {C}, COUNT(*) FROM bigmart.loyalty GROUP BY {C}")
    p.sql(f"SELECT SUM({C}) FROM bigmart.loyalty")
    p.sql(f"SELECT {C}.region, COUNT(*) FROM bigmart.loyalty GROUP BY 1")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty WHERE region = '{C}'")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty WHERE email = '{C}'")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty WHERE customer_key = '{C}'")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty WHERE visits_90d = '{C}'")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty WHERE region IN ('north', '{C}', 1)")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty WHERE region BETWEEN '{C}' AND 3")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty WHERE region LIKE '{C}%'")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty WHERE LOWER(region) = '{C}'")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty WHERE spend_90d > 10 AND region = '{C}'")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty WHERE region = '{C}' OR store_id < '{C}'")
    p.sql(f"SELECT {C}(region), COUNT(*) FROM bigmart.loyalty GROUP BY 1")
    p.sql(f"SELECT COUNT(*) AS {C}, COUNT(*) AS {C} FROM bigmart.loyalty")
    p.sql(f"SELECT '{C}' AS label, COUNT(*) FROM bigmart.loyalty")
    p.sql(f"SELECT CASE WHEN store_id = 'S1' THEN '{C}' END AS s, SUM(1) FROM bigmart.loyalty")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty WHERE region = '{C}")  # unclosed string
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty WHERE region = {C} {C} ({C}")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty {C} {C}")
    p.sql(f"{C} COUNT(*) FROM bigmart.loyalty")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty; DROP TABLE {C}")
    p.sql(f"SELECT COUNT(*) FROM (SELECT '{C}' FROM bigmart.loyalty)")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty ORDER BY '{C}'")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty LIMIT '{C}'")
    p.sql(f"WITH {C} AS (SELECT 1) SELECT COUNT(*) FROM {C}")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty /* {C} */ WHERE {C} = 1")
    p.sql(f"SELECT QUANTILE(spend_90d, '{C}') FROM bigmart.loyalty")
    p.sql(f"SELECT COUNT(*) FROM bigmart.loyalty WHERE region = E'\\x{C}'")
    p.query({"sql": [C], "epsilon": 0.1})


def plan_fields(p: Probe) -> None:
    p.plan(group_by=[C])
    p.plan(group_by=[f"bigmart.loyalty.{C}"])
    p.plan(group_by=[f"{C}.loyalty.region"])
    p.plan(group_by=["email"], aggregates=[{"fn": "count", "as": C}])
    p.plan(where=[{"column": C, "op": "eq", "value": "north"}])
    p.plan(where=[{"column": "region", "op": C, "value": "north"}])
    p.plan(where=[{"column": "region", "op": "eq", "value": C}], explain=False)
    p.plan(where=[{"column": "region", "op": "in", "values": ["north", C]}])
    p.plan(where=[{"column": "visits_90d", "op": "eq", "value": C}])
    p.plan(where=[{"column": "email", "op": "eq", "value": C}])
    p.plan(where=[{"column": "customer_key", "op": "eq", "value": C}])
    p.plan(where=[{"column": "region", "op": "between", "values": [C, 1]}])
    p.plan(where=[{"column": "region", "op": "eq", "value": [C]}])
    p.plan(where=[{"column": "region", "op": "eq", "value": {C: C}}])
    p.plan(where=C)
    p.plan(aggregates=[{"fn": C, "as": "n"}])
    p.plan(aggregates=[{"fn": "sum", "column": C, "as": "n"}])
    p.plan(aggregates=[{"fn": "sum", "column": "email", "as": C}])
    p.plan(aggregates=[{"fn": "count", "column": C, "as": C}])
    p.plan(aggregates=[{"fn": "quantile", "column": "spend_90d", "q": C, "as": C}])
    p.plan(aggregates=[{"fn": "count", "as": C}, {"fn": "count", "as": C}])
    p.plan(aggregates=[{"fn": "count", "as": f"{C}!" * 20}])
    p.plan(group_by=[{"bucket": [{"when": {"column": C, "op": "eq", "value": C}, "then": C}]}])
    p.plan(group_by=[{"bucket": [{"when": C, "then": C}], "else": C, "as": C}])
    when = {"column": "store_id", "op": "eq", "value": C}
    p.plan(group_by=[{"bucket": [{"when": when, "then": C * 10}], "else": C, "as": C}])
    p.plan(group_by=[{"bucket": [{"when": when, "then": C}], "else": "", "as": C}])
    p.query({"plan": {"from": f"bigmart.{C}", "aggregates": [{"fn": "count"}]}, "epsilon": 0.1})
    p.query({"plan": {"from": f"{C}.x", "aggregates": [{"fn": "count"}]}, "epsilon": 0.1})
    p.query({"plan": {"from": C, "aggregates": [{"fn": "count"}]}, "epsilon": 0.1})
    p.plan(join=[f"acme.{C}"])
    p.plan(join=C)
    p.query({"plan": C, "epsilon": 0.1})
    p.plan(epsilon=C)
    p.plan(epsilon=[C])
    p.plan(epsilon={C: C})
    p.query({"plan": {"from": "bigmart.loyalty", "aggregates": [{"fn": "count"}]},
             "accuracy": {"abs": C}})  # fmt: skip
    p.query(C)
    p.query([C])
    p.call(
        "POST",
        f"{BASE}/queries",
        "acme.analyst",
        content=f'{{"plan": "{C}'.encode(),
        headers={"Content-Type": "application/json"},
    )
    p.call(
        "POST",
        f"{BASE}/queries/explain",
        "acme.analyst",
        content=json.dumps({"sql": "SELECT COUNT(*) FROM bigmart.loyalty", "epsilon": 1}),
        headers={"Content-Type": f"application/{C}"},
    )
    p.query({"plan": {"from": f"bigmart.{C}"}, "epsilon": 0.1}, who="bigmart.contributor")


def headers_and_parameters(p: Probe) -> None:
    p.call("GET", "/v1/me", None, headers={"Authorization": f"Bearer {C}"})
    p.call("GET", "/v1/me", None, headers={"Authorization": f"Bearer igw_{C}.{C}"})
    p.call("GET", "/v1/me", None, headers={"Authorization": f"Basic {C}"})
    p.call("GET", f"{BASE}/budget", None, headers={"Authorization": f"Bearer igw_{C}"})
    p.call("GET", f"{BASE}/policy", "acme.analyst", headers={"Accept": f"application/{C}"})
    p.call("GET", f"/v1/{C}", "acme.analyst")
    p.call("DELETE", f"{BASE}/{C}", "acme.analyst")
    p.call("PATCH", f"{BASE}/policy", "acme.compliance", content=C.encode())
    p.call("GET", f"{BASE}/policy/versions/{C}", "acme.compliance")
    p.call("POST", f"{BASE}/policy/versions/{C}/approve", "bigmart.compliance")
    p.call("POST", f"{BASE}/policy/versions/99{C[-4:]}0/approve", "bigmart.compliance")
    for action in ("approve", "reject", "withdraw"):
        p.call("POST", f"{BASE}/policy/versions/1{C}/{action}", "bigmart.compliance")
    audit = f"{BASE}/audit"
    p.call("GET", audit, "acme.compliance", params={"limit": C})
    p.call("GET", audit, "acme.compliance", params={"after": C})
    p.call("GET", audit, "acme.compliance", params={"limit": "0", C: C})
    p.call("GET", audit, "acme.compliance", params={"limit": f"-{C}"})
    p.call("GET", audit, "acme.analyst", params={"limit": C})
    p.call("GET", f"{audit}/verify", "acme.compliance", params={C: C})
    p.call("GET", f"{BASE}/datasets", "acme.analyst", params={"name": C})


def unknown_field_names(p: Probe) -> None:
    """JSON fields the API does not define, named by the canary."""
    p.call("POST", "/v1/orgs", "admin", json={"id": "x2", "name": "x", "kind": "brand", C: 1})
    p.call("POST", "/v1/orgs/acme/keys", "admin", json={"role": "analyst", C: C})
    p.plan(where=[{"column": "region", "op": "eq", "value": "north", C: C}])
    p.plan(aggregates=[{"fn": "count", "as": "n", C: C}])
    p.plan(where=[{C: [{"column": "region", "op": "eq", "value": "north"}]}])
    p.query({"plan": {"from": "bigmart.loyalty", C: 1, "aggregates": []}, "epsilon": 0.1})
    p.query({C: 1, "plan": {"from": "bigmart.loyalty"}, "epsilon": 0.1})


def unknown_policy_keys(p: Probe) -> None:
    """Keys the policy schema does not define, named by the canary."""
    p.policy(policy_yaml(lambda d: d.update({C: 1})))
    p.policy(policy_yaml(lambda d: loyalty_columns(d)["region"].update({C: C})))
    p.policy(policy_yaml(lambda d: d["rules"].update({C: 1})))


def undescribed_join(p: Probe) -> None:
    p.policy(policy_yaml(lambda d: d.update(joins=[["bigmart.loyalty", f"acme.{C}"]])))
    p.policy(policy_yaml(lambda d: d.update(joins=[[C, "acme.survey"]])))


def policy_defined_names(p: Probe) -> None:
    """Names a proposed policy itself defines (a budget's organisation, a dataset, a column)."""
    p.policy(policy_yaml(lambda d: d["budgets"].update({C: {"epsilon": 1.0, "period": "none"}})))
    p.policy(policy_yaml(lambda d: d["budgets"].update({C: {"epsilon": 1.0, "period": "x"}})))
    p.policy(policy_yaml(lambda d: d["datasets"].update({f"{C}.x": {"owner": C}})))
    p.policy(policy_yaml(lambda d: d["datasets"].update({f"acme.{C}": {"owner": "acme"}})))
    p.policy(policy_yaml(lambda d: loyalty_columns(d).update({C: {"use": "measure"}})))


CASES: dict[str, Case] = {
    "upload cell values": uploads_with_canary_values,
    "upload column names": uploads_with_canary_columns,
    "upload dataset names and media types": uploads_with_canary_names,
    "org ids, names, kinds, key roles, members": admin_inputs,
    "policy values, comments and syntax errors": policy_documents,
    "sql text": sql_texts,
    "plan fields and epsilon": plan_fields,
    "headers, path and audit query parameters": headers_and_parameters,
    "collaboration ids on every endpoint": collaboration_ids,
    "a join of an undescribed dataset": undescribed_join,
    "unknown JSON field names": unknown_field_names,
    "unknown policy keys": unknown_policy_keys,
}


def request_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The event without what records the caller's own request (see the module docstring)."""
    details = dict(event.get("details") or {})
    action = str(event.get("action", ""))
    exempt = AUDIT_REQUEST_FIELDS.get(action.split(".")[0], ())
    return {**event, "details": {k: v for k, v in details.items() if k not in exempt}}


def leaks(texts: list[tuple[str, str]]) -> list[str]:
    """Where the canary was found, once per distinct text."""
    found = {text: where for where, text in texts if holds_canary(text)}
    return [f"{where}: {text[:500]}" for text, where in found.items()]


def everything_produced(
    probe: Probe, api: Any, keys: dict[str, Any], sink: LogSink, capfd: Any
) -> list[tuple[str, str]]:
    """Bodies and headers of every response, every log record, stdout, stderr, the audit."""
    found: list[tuple[str, str]] = []
    for r in probe.seen:
        where = f"{r.request.method} {r.request.url.path} -> {r.status_code}"
        found.append((where + " body", r.text))
        found.append((where + " headers", json.dumps(list(r.headers.multi_items()))))
    found += [("log", text) for text in sink.texts]
    out, err = capfd.readouterr()
    found += [("stdout", out), ("stderr", err)]
    for org in ("acme", "bigmart"):
        answer = api.get(f"{BASE}/audit", key=keys[org]["compliance"])
        assert answer.status_code == 200, answer.text
        found += [
            (f"audit({org}) {e['action']}", json.dumps(request_fields(e)))
            for e in answer.json()["events"]
        ]
    return found


def refusals_changed_nothing(probe: Probe, before: dict[str, Any], after: dict[str, Any]) -> None:
    """Every 4xx has the one error shape; only the requests that succeeded left a trace.

    A 201 upload adds a dataset version and its file, a fresh 200 query one ledger row; the
    refusals add nothing: no organisation, key, collaboration or policy version, no spool file.
    """
    for r in probe.seen:
        if 400 <= r.status_code < 500:
            error = r.json()["error"]
            assert set(error) == {"code", "message"} and error["code"] and error["message"], r.text
    uploads = sum(r.status_code == 201 and "/datasets/" in r.request.url.path for r in probe.seen)
    spent = sum(
        r.status_code == 200 and r.request.url.path.endswith("/queries") and not r.json()["replay"]
        for r in probe.seen
    )
    assert after["dataset_versions"] - before["dataset_versions"] == uploads
    assert len(after["stored"]) - len(before["stored"]) == uploads
    assert after["ledger"] - before["ledger"] == spent
    for unchanged in ("orgs", "api_keys", "collaborations", "policy_versions", "spool"):
        assert after[unchanged] == before[unchanged], unchanged


def run_case(
    case: Case,
    api: Any,
    keys: dict[str, Any],
    tables: Any,
    sink: LogSink,
    capfd: Any,
    snapshot: Callable[[], dict[str, Any]],
) -> list[str]:
    probe = Probe(api, keys, tables.loyalty.slice(0, ROWS))
    before = snapshot()
    case(probe)
    assert probe.seen and any(400 <= r.status_code < 500 for r in probe.seen)
    refusals_changed_nothing(probe, before, snapshot())
    return leaks(everything_produced(probe, api, keys, sink, capfd))


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_no_response_log_or_audit_event_echoes_the_canary(
    case: str,
    api: Any,
    demo_keys: dict[str, Any],
    demo_tables: Any,
    log_sink: LogSink,
    capfd: pytest.CaptureFixture[str],
    snapshot: Callable[[], dict[str, Any]],
) -> None:
    echoed = run_case(CASES[case], api, demo_keys, demo_tables, log_sink, capfd, snapshot)
    assert not echoed, "the canary came back:\n" + "\n".join(echoed)


def test_a_name_the_policy_defines_appears_only_in_the_path_of_its_refusal(
    api: Any,
    demo_keys: dict[str, Any],
    demo_tables: Any,
    log_sink: LogSink,
    capfd: pytest.CaptureFixture[str],
    snapshot: Callable[[], dict[str, Any]],
) -> None:
    """A proposal that names a new dataset, column or budget holder with the canary.

    Such a name is the document's own vocabulary (it becomes readable by every member once the
    policy is active), and the path that locates an error in the proposal may hold it: only
    there, only in the answer to the proposer. Refused proposals are not audited.
    """
    probe = Probe(api, demo_keys, demo_tables.loyalty.slice(0, ROWS))
    before = snapshot()
    policy_defined_names(probe)
    refusals_changed_nothing(probe, before, snapshot())
    for response in probe.seen:
        assert response.status_code == 422, response.text
        message = response.json()["error"]["message"]
        path, _, rest = message.partition(": ")
        assert not holds_canary(rest), message
        assert holds_canary(path), message  # the case did reach the named entry
    probe.seen.clear()  # bodies checked above; logs, output and audit are scanned whole below
    echoed = leaks(everything_produced(probe, api, demo_keys, log_sink, capfd))
    assert not echoed, "the canary came back:\n" + "\n".join(echoed)
