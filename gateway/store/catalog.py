"""The catalog: organisations, API keys, collaborations, policy and dataset versions, releases."""

from __future__ import annotations

import json
from datetime import datetime

from gateway.domain.model import (
    Collaboration,
    DatasetVersion,
    Organisation,
    PolicyVersion,
    Principal,
    Role,
)
from gateway.store.crypto import hash_secret, secrets_match
from gateway.store.db import Database


class Catalog:
    """Reads and writes the catalog tables. Callers own the business rules."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # organisations and keys -------------------------------------------------------------
    def add_org(self, org: Organisation, at: datetime) -> None:
        self.db.execute("INSERT INTO orgs VALUES (?, ?, ?, ?)", (org.id, org.name, org.kind, at))

    def org(self, org_id: str) -> Organisation | None:
        row = self.db.one("SELECT id, name, kind FROM orgs WHERE id = ?", (org_id,))
        return Organisation(*row) if row else None

    def add_key(self, key_id: str, org: str, role: Role, secret: str, at: datetime) -> None:
        self.db.execute(
            "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, NULL)",
            (key_id, org, role, hash_secret(secret), at),
        )

    def principal(self, key_id: str, secret: str) -> Principal | None:
        """The principal for a key if the secret matches and the key is not revoked."""
        row = self.db.one(
            "SELECT org, role, secret_hash FROM api_keys WHERE key_id = ? AND revoked_at IS NULL",
            (key_id,),
        )
        if row is None or not secrets_match(secret, row[2]):
            return None
        return Principal(key_id=key_id, org=row[0], role=row[1])

    def count_keys(self, role: Role) -> int:
        row = self.db.one("SELECT COUNT(*) FROM api_keys WHERE role = ?", (role,))
        return int(row[0]) if row else 0

    # collaborations ---------------------------------------------------------------------
    def add_collaboration(
        self,
        collab_id: str,
        name: str,
        members: tuple[str, ...],
        wrapped_secret: bytes,
        at: datetime,
        token_scheme: str,
    ) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO collaborations (id, name, token_secret, created_at, token_scheme) "
                "VALUES (?, ?, ?, ?, ?)",
                (collab_id, name, wrapped_secret, at, token_scheme),
            )
            for org in members:
                tx.execute("INSERT INTO members VALUES (?, ?)", (collab_id, org))

    def collaboration(self, collab_id: str) -> Collaboration | None:
        row = self.db.one(
            "SELECT id, name, created_at FROM collaborations WHERE id = ?", (collab_id,)
        )
        if row is None:
            return None
        members = self.db.execute(
            "SELECT org FROM members WHERE collaboration = ? ORDER BY org", (collab_id,)
        )
        return Collaboration(row[0], row[1], tuple(m[0] for m in members), row[2])

    def wrapped_token_secret(self, collab_id: str) -> tuple[str, bytes]:
        """The collaboration's token scheme and its wrapped token secret.

        Collaborations created before token schemes were recorded read as ``hmac-sha256-128``
        (the column's default), the scheme their stored tokens were made with.
        """
        row = self.db.one(
            "SELECT token_scheme, token_secret FROM collaborations WHERE id = ?", (collab_id,)
        )
        assert row is not None
        return str(row[0]), bytes(row[1])

    # policies ---------------------------------------------------------------------------
    _POLICY_COLUMNS = (
        "collaboration, version, document, status, proposed_by, created_at, required_json"
    )

    def add_policy_version(
        self,
        collab_id: str,
        document: str,
        status: str,
        proposed_by: str,
        at: datetime,
        required: tuple[str, ...] = (),
    ) -> int:
        """Store a new version; an ``active`` one supersedes the active version atomically."""
        with self.db.transaction() as tx:
            row = tx.one(
                "SELECT COALESCE(MAX(version), 0) FROM policy_versions WHERE collaboration = ?",
                (collab_id,),
            )
            version = int(row[0] if row else 0) + 1
            if status == "active":
                self._supersede_active(tx, collab_id)
            tx.execute(
                f"INSERT INTO policy_versions ({self._POLICY_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (collab_id, version, document, status, proposed_by, at, json.dumps(required)),
            )
        return version

    def _policy(self, row: tuple[object, ...]) -> PolicyVersion:
        collab_id, version = str(row[0]), int(str(row[1]))
        decisions = {
            str(org): str(decision)
            for org, decision in self.db.execute(
                "SELECT org, decision FROM policy_decisions WHERE collaboration = ? "
                "AND version = ?",
                (collab_id, version),
            )
        }
        return PolicyVersion(
            collab_id,
            version,
            str(row[2]),
            str(row[3]),
            str(row[4]),
            row[5],  # type: ignore[arg-type]
            tuple(json.loads(str(row[6] or "[]"))),
            decisions,
        )

    def policy_versions(self, collab_id: str, status: str | None = None) -> list[PolicyVersion]:
        sql = f"SELECT {self._POLICY_COLUMNS} FROM policy_versions WHERE collaboration = ?"
        params: list[object] = [collab_id]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        return [self._policy(r) for r in self.db.execute(sql + " ORDER BY version", params)]

    def policy_version(self, collab_id: str, version: int) -> PolicyVersion | None:
        rows = self.db.execute(
            f"SELECT {self._POLICY_COLUMNS} FROM policy_versions "
            "WHERE collaboration = ? AND version = ?",
            (collab_id, version),
        )
        return self._policy(rows[0]) if rows else None

    def active_policy(self, collab_id: str) -> PolicyVersion | None:
        found = self.policy_versions(collab_id, "active")
        return found[0] if found else None

    def decide_policy(
        self,
        collab_id: str,
        version: int,
        org: str,
        decision: str,
        decided_by: str,
        at: datetime,
        new_status: str | None,
    ) -> None:
        """Record one organisation's decision and, if given, the version's new status.

        Activation supersedes the active version in the same transaction.
        """
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO policy_decisions VALUES (?, ?, ?, ?, ?, ?)",
                (collab_id, version, org, decision, decided_by, at),
            )
            if new_status is not None:
                self._set_status(tx, collab_id, version, new_status)

    def set_policy_status(self, collab_id: str, version: int, status: str) -> None:
        with self.db.transaction() as tx:
            self._set_status(tx, collab_id, version, status)

    @staticmethod
    def _supersede_active(tx: Database, collab_id: str) -> None:
        tx.execute(
            "UPDATE policy_versions SET status = 'superseded' "
            "WHERE collaboration = ? AND status = 'active'",
            (collab_id,),
        )

    @classmethod
    def _set_status(cls, tx: Database, collab_id: str, version: int, status: str) -> None:
        if status == "active":
            cls._supersede_active(tx, collab_id)
        tx.execute(
            "UPDATE policy_versions SET status = ? WHERE collaboration = ? AND version = ?",
            (status, collab_id, version),
        )

    # datasets ---------------------------------------------------------------------------
    def next_dataset_version(self, collab_id: str, dataset: str) -> int:
        row = self.db.one(
            "SELECT COALESCE(MAX(version), 0) FROM dataset_versions "
            "WHERE collaboration = ? AND dataset = ?",
            (collab_id, dataset),
        )
        return int(row[0] if row else 0) + 1

    def add_dataset_version(self, dv: DatasetVersion) -> None:
        self.db.execute(
            "INSERT INTO dataset_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                dv.collaboration,
                dv.dataset,
                dv.version,
                dv.file,
                dv.wrapped_key,
                dv.rows,
                dv.max_rows_per_customer,
                json.dumps(dv.schema),
                dv.uploaded_by,
                dv.created_at,
            ),
        )

    def latest_datasets(self, collab_id: str) -> dict[str, DatasetVersion]:
        """The newest version of every dataset of a collaboration, keyed by dataset id."""
        rows = self.db.execute(
            "SELECT collaboration, dataset, version, file, wrapped_key, rows, "
            "max_rows_per_customer, schema_json, uploaded_by, created_at FROM dataset_versions "
            "WHERE collaboration = ? QUALIFY version = MAX(version) OVER (PARTITION BY dataset)",
            (collab_id,),
        )
        return {
            r[1]: DatasetVersion(
                r[0],
                r[1],
                int(r[2]),
                r[3],
                bytes(r[4]),
                int(r[5]),
                int(r[6]),
                json.loads(r[7]),
                r[8],
                r[9],
            )
            for r in rows
        }

    # releases (replay cache) --------------------------------------------------------------
    def stored_release(self, collab_id: str, org: str, fingerprint: str) -> str | None:
        row = self.db.one(
            "SELECT release_json FROM releases WHERE collaboration = ? AND org = ? "
            "AND fingerprint = ?",
            (collab_id, org, fingerprint),
        )
        return str(row[0]) if row else None

    def store_release(
        self,
        collab_id: str,
        org: str,
        fingerprint: str,
        query_id: str,
        release_json: str,
        at: datetime,
    ) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO releases VALUES (?, ?, ?, ?, ?, ?)",
            (collab_id, org, fingerprint, query_id, release_json, at),
        )

    # gateway secrets --------------------------------------------------------------------
    def gateway_secret(self, name: str) -> bytes | None:
        row = self.db.one("SELECT wrapped FROM gateway_secrets WHERE name = ?", (name,))
        return bytes(row[0]) if row else None

    def set_gateway_secret(self, name: str, wrapped: bytes) -> None:
        self.db.execute("INSERT INTO gateway_secrets VALUES (?, ?)", (name, wrapped))
