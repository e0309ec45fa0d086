"""The federator's durable log: the plan, the shard assignments and every completed round.

One SQLite file (WAL journal, ``synchronous=FULL``): a round is durable once
:meth:`DurableLog.append_round` returns, and the federator broadcasts an aggregate only after
that. Tables::

    meta(key TEXT PRIMARY KEY, value TEXT)          -- 'schema' = '1', 'plan' = canonical JSON
    rounds(round INTEGER PRIMARY KEY, aggregate BLOB,  -- float32 little-endian, m values
           participants TEXT, rejected TEXT,        -- JSON lists
           closed_at REAL)                          -- Unix time
    shards(client_id TEXT PRIMARY KEY, shard INTEGER UNIQUE)

The object is not thread-safe: after :meth:`open` the federator calls it from one thread only.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyber0.common.plan import TrainingPlan, plan_fields, plan_json

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds(
    round INTEGER PRIMARY KEY,
    aggregate BLOB NOT NULL,
    participants TEXT NOT NULL,
    rejected TEXT NOT NULL,
    closed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS shards(client_id TEXT PRIMARY KEY, shard INTEGER NOT NULL UNIQUE);
"""


class LogError(RuntimeError):
    """The log cannot be used: another plan, a gap in its rounds, an unknown schema, a file
    that cannot be opened or written (disk full, I/O error)."""


@dataclass(frozen=True)
class RoundRecord:
    """A completed round: its aggregate (float32 bytes), who took part, who was refused why."""

    round: int
    aggregate: bytes
    participants: tuple[str, ...]
    rejected: tuple[tuple[str, str], ...]


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class DurableLog:
    """An opened log; use :meth:`open`."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: str | None, plan: TrainingPlan) -> DurableLog:
        """Open (creating if needed) the log at ``path`` (None: in memory, not durable).

        A new log records ``plan``; an existing one must hold the same plan, else
        :class:`LogError` lists the differing fields.
        """
        where = ":memory:" if path is None else path
        try:
            if path is not None:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise LogError(f"cannot open log {where}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
            log = cls(conn, where)
            log._check_or_store_plan(plan)
            log._check_rounds()
        except sqlite3.Error as exc:
            conn.close()
            raise LogError(f"cannot use log {where}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return log

    def _check_or_store_plan(self, plan: TrainingPlan) -> None:
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            with self._transaction():
                self._conn.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [("schema", SCHEMA_VERSION), ("plan", plan_json(plan))],
                )
            return
        if meta.get("schema") != SCHEMA_VERSION:
            raise LogError(
                f"log {self.path} has schema {meta.get('schema')!r}; "
                f"this federator reads schema {SCHEMA_VERSION!r}"
            )
        try:
            logged = _flatten(plan_fields(meta["plan"]))  # a field added since: its default
        except (KeyError, ValueError, TypeError) as exc:
            raise LogError(
                f"log {self.path} is damaged: its plan cannot be read ({exc!r})"
            ) from exc
        configured = _flatten(json.loads(plan_json(plan)))
        diffs = [
            f"{key}: logged {logged.get(key)!r}, configured {configured.get(key)!r}"
            for key in sorted(set(logged) | set(configured))
            if logged.get(key) != configured.get(key)
        ]
        if diffs:
            raise LogError(
                f"log {self.path} was written for another plan ({'; '.join(diffs)}); "
                "configure the logged plan to resume it, or use a new log file"
            )

    def _check_rounds(self) -> None:
        count, first, last = self._conn.execute(
            "SELECT COUNT(*), MIN(round), MAX(round) FROM rounds"
        ).fetchone()
        if count and (first, last) != (0, count - 1):
            raise LogError(
                f"log {self.path} is damaged: {count} rounds, numbered {first} to {last}"
            )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    def aggregates(self) -> list[bytes]:
        """The aggregates of all completed rounds, in round order."""
        rows = self._conn.execute("SELECT aggregate FROM rounds ORDER BY round").fetchall()
        return [bytes(row[0]) for row in rows]

    def shards(self) -> dict[str, int]:
        """The persisted client id → shard index assignments."""
        return dict(self._conn.execute("SELECT client_id, shard FROM shards").fetchall())

    def append_round(self, record: RoundRecord) -> None:
        """Commit ``record`` in one transaction; its round must be the next one. Raises
        :class:`LogError` if it cannot be written (the transaction is rolled back: the log
        keeps exactly the rounds before)."""
        try:
            self._append_round(record)
        except sqlite3.Error as exc:
            raise LogError(
                f"cannot commit round {record.round} to log {self.path}: {exc}; "
                f"the log is intact and holds rounds 0..{record.round - 1}"
            ) from exc

    def _append_round(self, record: RoundRecord) -> None:
        (count,) = self._conn.execute("SELECT COUNT(*) FROM rounds").fetchone()
        if record.round != count:
            raise LogError(f"round {record.round} appended after {count} logged rounds")
        with self._transaction():
            self._conn.execute(
                "INSERT INTO rounds(round, aggregate, participants, rejected, closed_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    record.round,
                    record.aggregate,
                    json.dumps(list(record.participants)),
                    json.dumps([{"client": c, "reason": r} for c, r in record.rejected]),
                    time.time(),
                ),
            )

    def assign_shard(self, client_id: str) -> int:
        """Give ``client_id`` the next shard (the logged shards are 0 … k−1: k) and persist it,
        in one transaction; returns the shard. :class:`LogError` if it cannot be written (then
        nothing was: the shard stays free)."""
        try:
            with self._transaction():
                (shard,) = self._conn.execute("SELECT COUNT(*) FROM shards").fetchone()
                self._conn.execute(
                    "INSERT INTO shards(client_id, shard) VALUES (?, ?)", (client_id, shard)
                )
        except sqlite3.Error as exc:
            raise LogError(f"cannot record the shard of {client_id} in {self.path}: {exc}") from exc
        return int(shard)

    def enrol(self, enrolment: Sequence[str]) -> dict[str, int]:
        """Persist the enrolment's assignment (the i-th id holds shard i) and return it. The
        shards the log already assigned must agree (a restart with the same list, or a list
        that keeps the order of an earlier run's joins): else :class:`LogError` naming them,
        and nothing is written."""
        assignment = {client_id: i for i, client_id in enumerate(enrolment)}
        try:
            with self._transaction():
                logged = self.shards()
                conflicts = [
                    f"{client_id}: logged {shard}, enrolled {assignment.get(client_id)}"
                    for client_id, shard in sorted(logged.items(), key=lambda item: item[1])
                    if assignment.get(client_id) != shard
                ]
                if conflicts:
                    raise LogError(
                        f"log {self.path} assigned shards the enrolment contradicts "
                        f"({'; '.join(conflicts)}); enrol the logged ids at their shards, or "
                        "use a new log file"
                    )
                self._conn.executemany(
                    "INSERT INTO shards(client_id, shard) VALUES (?, ?)",
                    [(c, i) for c, i in assignment.items() if c not in logged],
                )
        except sqlite3.Error as exc:
            raise LogError(f"cannot record the enrolment in {self.path}: {exc}") from exc
        return assignment

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._conn.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` on an autocommit connection; ``ROLLBACK`` when the body
    or the ``COMMIT`` itself fails (a full disk fails at ``COMMIT``, when the WAL is written)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
