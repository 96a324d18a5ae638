"""Request and response models of API v1: the typed shapes the OpenAPI document publishes.

Request bodies forbid fields they do not define: an unknown field is a 422 ``unknown_field``,
so nobody can believe they set ``epsilon_spent`` or ``owner``. Response models describe what
the service layer returns, field for field (DESIGN.md's shapes are binding):

- A field that is *absent* in some answers (``rows`` of another party's dataset, the ``rho_*``
  figures outside zCDP mode) is declared with ``default=None`` but no ``None`` in its type:
  routes serialise with ``exclude_unset``, so it is left out, never sent as ``null``.
- Response models allow extra fields, so a figure the service layer adds is passed on, not
  silently dropped; the fuzz test checks every declared field against real answers.
- Numbers that may be integers (``"epsilon_spent": 0`` on a replay, ``"delta": 0``) are
  ``int | float``, so an integer stays an integer on the wire.
- Release rows and explain's per-output figures are keyed by the analyst's own output names,
  so they are objects of JSON values rather than fixed models.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.domain.model import Role

Number = int | float


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")  # nobody sets fields we do not expect


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def absent() -> Any:
    """A field left out of an answer rather than sent as ``null`` (see the module docstring)."""
    return Field(default=None)


# --- requests ------------------------------------------------------------------------------


class OrgIn(RequestModel):
    id: str
    name: str
    kind: str


class KeyIn(RequestModel):
    role: str


class CollaborationIn(RequestModel):
    id: str
    name: str
    members: list[str] = Field(default_factory=list)


# --- errors --------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="stable machine-readable code, e.g. `budget_exceeded`")
    message: str = Field(description="names fields, columns and policy paths, never values")


class ErrorOut(BaseModel):
    """The one error shape: ``{"error": {"code": ..., "message": ...}}``."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


# --- identity and administration ------------------------------------------------------------


class HealthOut(ResponseModel):
    status: str
    version: str


class MeOut(ResponseModel):
    org: str
    role: Role
    key_id: str


class OrgOut(ResponseModel):
    id: str
    name: str
    kind: str


class KeyOut(ResponseModel):
    """A new key; ``secret`` is shown this once and stored only as a hash."""

    key_id: str
    org: str
    role: Role
    secret: str


class CollaborationOut(ResponseModel):
    id: str
    name: str
    members: list[str]
    policy_version: int | None
    created_at: str


# --- datasets ------------------------------------------------------------------------------


class UploadOut(ResponseModel):
    dataset: str
    version: int
    rows: int
    schema_: dict[str, str] = Field(alias="schema")
    max_rows_per_customer: int
    dropped_columns: list[str]
    policy_version: int


class ColumnOut(ResponseModel):
    use: str
    type: str
    keys: list[str | int] = absent()
    bounds: list[Number] = absent()
    per_unit_bounds: list[Number] = absent()
    aggregates: list[str] = absent()


class DatasetOut(ResponseModel):
    """A dataset of the active policy; exact ``rows`` are shown to its owner only."""

    id: str
    owner: str
    kind: str
    max_rows_per_unit: int
    columns: dict[str, ColumnOut]
    version: int | None
    uploaded_at: str | None
    rows: int = absent()
    max_rows_per_customer: int = absent()


class DatasetsOut(ResponseModel):
    policy_version: int
    datasets: list[DatasetOut]


# --- policy --------------------------------------------------------------------------------


class PolicyOut(ResponseModel):
    """The active version: the YAML ``document`` as proposed and its parsed ``policy``."""

    collaboration: str
    version: int
    status: str
    proposed_by: str | None
    created_at: str
    document: str
    policy: dict[str, Any]


class PolicyAnswerOut(ResponseModel):
    """A proposal or decision: ``status`` is active, pending, rejected or withdrawn."""

    status: str
    version: int
    approvals: dict[str, bool]
    diff: str


class PolicyVersionSummary(ResponseModel):
    version: int
    status: str
    proposed_by: str | None
    created_at: str
    approvals: dict[str, bool]


class PolicyVersionsOut(ResponseModel):
    versions: list[PolicyVersionSummary]


class PolicyVersionOut(ResponseModel):
    """Any version, with its ``diff`` against the version active now."""

    collaboration: str
    version: int
    status: str
    proposed_by: str | None
    created_at: str
    approvals: dict[str, bool]
    document: str
    policy: dict[str, Any]
    diff: str


# --- budget --------------------------------------------------------------------------------


class BudgetFigures(ResponseModel):
    """Spent and left this period; zCDP policies add ρ and give ε as (ε, δ) equivalents."""

    epsilon_total: Number
    epsilon_spent: Number
    epsilon_left: Number
    rho_total: Number = absent()
    rho_spent: Number = absent()
    rho_left: Number = absent()
    delta: Number = absent()


class BudgetEntry(ResponseModel):
    """One analyst organisation's budget this period (``resets_at`` null: never resets)."""

    org: str
    epsilon_total: Number
    epsilon_spent: Number
    epsilon_left: Number
    rho_total: Number = absent()
    rho_spent: Number = absent()
    rho_left: Number = absent()
    delta: Number = absent()
    period: str
    resets_at: str | None


class BudgetsOut(ResponseModel):
    budgets: list[BudgetEntry]


class BudgetPoint(ResponseModel):
    """Spent so far in the period at ``at`` (cumulative), against the active policy's total."""

    at: str
    epsilon_spent: Number
    epsilon_total: Number
    rho_spent: Number = absent()
    rho_total: Number = absent()


class BudgetSeries(ResponseModel):
    """One analyst organisation in one period (``period``: the ledger's key, ``2026-11`` for a
    UTC month or ``all``). ``bucket`` says what a point sums: one ``query``'s charge, or past
    400 charges a UTC ``day`` (then ``month``, ``year``), dated by its last charge."""

    org: str
    period: str
    bucket: str
    points: list[BudgetPoint]


class BudgetHistoryOut(ResponseModel):
    """Spend over time from the ledger: every analyst organisation's for compliance officers,
    an analyst's own; the current period and up to 11 earlier ones, oldest first."""

    series: list[BudgetSeries]


# --- queries -------------------------------------------------------------------------------


class ReleaseOut(ResponseModel):
    """A DP release. ``rows`` hold the group keys and one ``{value, ci95, …}`` per output."""

    query_id: str
    replay: bool
    epsilon_spent: Number
    delta_spent: Number
    rho_spent: Number = absent()
    policy_version: int
    budget: BudgetFigures
    group_by: list[str]
    rows: list[dict[str, Any]]
    datasets: dict[str, int]


class StatisticOut(ResponseModel):
    statistic: str
    kind: str
    sensitivity: Number
    epsilon: Number
    noise_scale: Number


class BindingRuleOut(ResponseModel):
    value: Any
    path: str


class ExplainOut(ResponseModel):
    """What a query would cost and how accurate it would be; nothing is spent."""

    epsilon: Number
    delta: Number
    rho: Number = absent()
    accuracy_target: dict[str, Any] | None
    policy_version: int
    groups: int | None
    private_groups: bool
    rows_per_customer: int
    groups_per_customer: int
    statistics: list[StatisticOut]
    aggregates: list[dict[str, Any]]
    min_group_size: int
    binding_rules: dict[str, BindingRuleOut]
    budget: BudgetFigures
    within_budget: bool


# --- audit ---------------------------------------------------------------------------------


class ActorOut(ResponseModel):
    org: str | None
    role: str | None


class AuditEventOut(ResponseModel):
    """An event as the caller's organisation reads it.

    ``seq`` numbers the events of the collaboration the caller may read (1, 2, 3 …, no gaps,
    whatever other organisations do); ``after`` pages and ``first_bad`` counts in it. ``hash``
    is the entry's fingerprint: a stable reference the operator can find in the chain, which
    says nothing about the entries around it.
    """

    seq: int = Field(description="position among the events this caller may read, from 1")
    at: str
    collaboration: str | None
    actor: ActorOut
    action: str
    details: dict[str, Any]
    hash: str = Field(description="the entry's fingerprint (SHA-256), not its chain hash")


class AuditOut(ResponseModel):
    events: list[AuditEventOut]


class AuditVerifyOut(ResponseModel):
    """``events`` counts the events the caller may read; ``first_bad`` is the ``seq`` of the
    first of them the chain no longer vouches for (null when intact, or when the break lies
    after all of them)."""

    ok: bool
    events: int
    first_bad: int | None
