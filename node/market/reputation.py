"""Provider reputation: points per judged period, standings, and provider ranking.

Theory of operation
-------------------
Every provider starts at ``ReputationPolicy.initial`` (1000) points (SPEC
section 6, seed). Each contract period judged by `node.market.quality.assess`
moves the score by `points_for`:

================  ===========================================================
outcome           points
================  ===========================================================
exceptional       ``+max_gain`` (+500)
compliant         ``+min_gain + (compliant_max_gain - min_gain) * merit`` --
                  +100 when the SLA was just met, rising linearly to +300 as
                  ``merit_bp`` goes 0 .. 10000
violation         ``-(min_loss + (max_loss - min_loss) * severity)`` --
                  -100 for a marginal miss, down to -500 for the worst
================  ===========================================================

so a good period adds 100..500 and a poor one subtracts 100..500; the
biggest reward is kept for exceptional service and the biggest loss for
severe misses (``severity_bp``: see `node.market.quality`).

The score is clamped to ``0 .. max_score`` (5000): the floor keeps one
disaster from burying a provider for ever, the ceiling keeps old merit from
outweighing any price. History records the points actually applied.

Standings (`standing`), with the default policy:

- ``high``:   score >= 2000
- ``normal``: 500 <= score < 2000
- ``low``:    200 <= score < 500
- ``banned``: score < 200 -- excluded from `rank_providers`

Every change is stored with its cause -- a text saying which period of which
contract and how it was judged, the contract ID, the period, the time -- so a
score is always explainable (``zhtp`` can print the history). A period of a
contract counts once: recording the same (peer, contract, period) again
changes nothing, so a replayed or re-run audit cannot be double-counted.

Ranking (`rank_providers`): banned providers are dropped; the rest are
ordered by *price per reputation*, ``price / min(score, rank_score_cap)``,
lowest first -- a provider with twice the reputation may ask twice the price
and still tie. The cap (3000) stops reputation from buying more than 3x the
price. Ties go to the higher score, then the lower price, then the peer ID,
so the order is total and deterministic.

Storage: tables ``reputation_scores`` and ``reputation_events`` in the node's
SQLite database, migrated with `migrate_component` like every other
component sharing the file. Threads: calls block; one connection, serialised
by a lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from types import TracebackType

from node.market.quality import BP_PER_UNIT, SlaOutcome, Verdict
from node.storage.shards import open_component_database

__all__ = [
    "DEFAULT_POLICY",
    "SCHEMA_VERSION",
    "RankedProvider",
    "ReputationBook",
    "ReputationChange",
    "ReputationEvent",
    "ReputationPolicy",
    "Standing",
    "period_event",
    "points_for",
    "rank_providers",
    "standing",
]

MAX_PEER_SIZE = 128
MAX_CAUSE_SIZE = 1024
CONTRACT_ID_SIZE = 32
_INT64_MAX = (1 << 63) - 1


def _check_int(what: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be in {low}..{high}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class ReputationPolicy:
    """Every number of the reputation system, in one place (see the module docstring)."""

    initial: int = 1_000
    min_gain: int = 100
    compliant_max_gain: int = 300
    max_gain: int = 500
    min_loss: int = 100
    max_loss: int = 500
    high: int = 2_000  # score >= high: "high"
    low: int = 500  # score < low: "low"
    banned: int = 200  # score < banned: "banned"
    max_score: int = 5_000
    rank_score_cap: int = 3_000

    def __post_init__(self) -> None:
        _check_int("max_score", self.max_score, 1, 1 << 40)
        _check_int("initial", self.initial, 0, self.max_score)
        _check_int("min_gain", self.min_gain, 0, self.max_score)
        _check_int("compliant_max_gain", self.compliant_max_gain, self.min_gain, self.max_score)
        _check_int("max_gain", self.max_gain, self.compliant_max_gain, self.max_score)
        _check_int("min_loss", self.min_loss, 0, self.max_score)
        _check_int("max_loss", self.max_loss, self.min_loss, self.max_score)
        _check_int("banned", self.banned, 0, self.max_score)
        _check_int("low", self.low, self.banned, self.max_score)
        _check_int("high", self.high, self.low, self.max_score)
        _check_int("rank_score_cap", self.rank_score_cap, 1, self.max_score)


DEFAULT_POLICY = ReputationPolicy()


class Standing(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"
    BANNED = "banned"


def standing(score: int, policy: ReputationPolicy = DEFAULT_POLICY) -> Standing:
    if score < policy.banned:
        return Standing.BANNED
    if score < policy.low:
        return Standing.LOW
    if score >= policy.high:
        return Standing.HIGH
    return Standing.NORMAL


def points_for(outcome: SlaOutcome, policy: ReputationPolicy = DEFAULT_POLICY) -> int:
    """Points one judged period is worth (module docstring): +/- 100..500 by default."""
    if outcome.verdict is Verdict.EXCEPTIONAL:
        return policy.max_gain
    if outcome.verdict is Verdict.COMPLIANT:
        span = policy.compliant_max_gain - policy.min_gain
        return policy.min_gain + span * outcome.merit_bp // BP_PER_UNIT
    span = policy.max_loss - policy.min_loss
    return -(policy.min_loss + span * outcome.severity_bp // BP_PER_UNIT)


@dataclass(frozen=True, slots=True)
class ReputationEvent:
    """A reason to change a score: how many points, and why."""

    points: int
    cause: str
    at_ms: int
    contract_id: bytes | None = None
    period: int | None = None


def period_event(
    outcome: SlaOutcome,
    contract_id: bytes,
    period: int,
    at_ms: int,
    policy: ReputationPolicy = DEFAULT_POLICY,
) -> ReputationEvent:
    """The reputation event for one judged contract period."""
    cause = f"contract {contract_id.hex()[:16]} period {period}: {outcome.describe()}"
    return ReputationEvent(
        points=points_for(outcome, policy),
        cause=cause[:MAX_CAUSE_SIZE],
        at_ms=at_ms,
        contract_id=contract_id,
        period=period,
    )


@dataclass(frozen=True, slots=True)
class ReputationChange:
    """One stored change: ``points`` is what was applied after clamping."""

    at_ms: int
    points: int
    cause: str
    contract_id: bytes | None
    period: int | None
    score_after: int


def _check_peer(peer: object) -> bytes:
    if not isinstance(peer, bytes):
        raise TypeError(f"peer must be bytes, got {type(peer).__name__}")
    if not 1 <= len(peer) <= MAX_PEER_SIZE:
        raise ValueError(f"peer must be 1..{MAX_PEER_SIZE} bytes, got {len(peer)}")
    return peer


def _check_event(event: ReputationEvent) -> None:
    if not isinstance(event, ReputationEvent):
        raise TypeError("event must be a ReputationEvent")
    _check_int("points", event.points, -_INT64_MAX, _INT64_MAX)
    _check_int("at_ms", event.at_ms, 0, _INT64_MAX)
    if not isinstance(event.cause, str) or not event.cause:
        raise ValueError("a reputation change needs a cause")
    if len(event.cause.encode("utf-8")) > MAX_CAUSE_SIZE:
        raise ValueError(f"cause longer than {MAX_CAUSE_SIZE} bytes")
    if (event.contract_id is None) != (event.period is None):
        raise ValueError("contract_id and period go together")
    if event.contract_id is not None:
        if not isinstance(event.contract_id, bytes) or len(event.contract_id) != CONTRACT_ID_SIZE:
            raise ValueError(f"contract_id must be {CONTRACT_ID_SIZE} bytes")
        _check_int("period", event.period, 0, _INT64_MAX)


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS reputation_scores (
            peer BLOB PRIMARY KEY NOT NULL,
            score INTEGER NOT NULL
        ) WITHOUT ROWID
        """
    )
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS reputation_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            peer BLOB NOT NULL,
            at_ms INTEGER NOT NULL,
            points INTEGER NOT NULL,
            cause TEXT NOT NULL,
            contract_id BLOB CHECK (contract_id IS NULL OR length(contract_id) = 32),
            period INTEGER,
            score_after INTEGER NOT NULL
        )
        """
    )
    conn.execute(
        "CREATE INDEX IF NOT EXISTS reputation_events_peer ON reputation_events (peer, id)"
    )
    conn.execute(
        "CREATE UNIQUE INDEX IF NOT EXISTS reputation_events_period"
        " ON reputation_events (peer, contract_id, period) WHERE contract_id IS NOT NULL"
    )


# Append only.
_MIGRATIONS = (_migrate_to_1,)
SCHEMA_VERSION = len(_MIGRATIONS)
_COMPONENT = "reputation"


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class ReputationBook:
    """Provider scores and their explained history, in the node database at `db_path`."""

    def __init__(self, db_path: Path, policy: ReputationPolicy = DEFAULT_POLICY) -> None:
        self.db_path = db_path
        self.policy = policy
        self._lock = threading.Lock()
        self._conn = open_component_database(db_path, _COMPONENT, _MIGRATIONS)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ReputationBook:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _score(self, peer: bytes) -> int:
        row = self._conn.execute(
            "SELECT score FROM reputation_scores WHERE peer = ?", (peer,)
        ).fetchone()
        return self.policy.initial if row is None else int(row[0])

    def score(self, peer: bytes) -> int:
        """The peer's score; ``policy.initial`` for a peer never recorded."""
        _check_peer(peer)
        with self._lock:
            return self._score(peer)

    def standing(self, peer: bytes) -> Standing:
        return standing(self.score(peer), self.policy)

    def record(self, peer: bytes, event: ReputationEvent) -> int:
        """Apply `event` to the peer's score and store it with its cause; the new score.

        An event for a (contract, period) already recorded for this peer
        changes nothing and returns the current score.
        """
        _check_peer(peer)
        _check_event(event)
        with self._lock, _transaction(self._conn):
            current = self._score(peer)
            if event.contract_id is not None:
                seen = self._conn.execute(
                    "SELECT 1 FROM reputation_events"
                    " WHERE peer = ? AND contract_id = ? AND period = ?",
                    (peer, event.contract_id, event.period),
                ).fetchone()
                if seen is not None:
                    return current
            new = max(0, min(self.policy.max_score, current + event.points))
            self._conn.execute(
                "INSERT INTO reputation_scores (peer, score) VALUES (?, ?)"
                " ON CONFLICT (peer) DO UPDATE SET score = excluded.score",
                (peer, new),
            )
            self._conn.execute(
                "INSERT INTO reputation_events"
                " (peer, at_ms, points, cause, contract_id, period, score_after)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    peer,
                    event.at_ms,
                    new - current,
                    event.cause,
                    event.contract_id,
                    event.period,
                    new,
                ),
            )
            return new

    def history(self, peer: bytes, limit: int = 50) -> list[ReputationChange]:
        """The peer's most recent changes, newest first."""
        _check_peer(peer)
        _check_int("limit", limit, 0, 1_000_000)
        with self._lock:
            rows = self._conn.execute(
                "SELECT at_ms, points, cause, contract_id, period, score_after"
                " FROM reputation_events WHERE peer = ? ORDER BY id DESC LIMIT ?",
                (peer, limit),
            ).fetchall()
        return [
            ReputationChange(
                at_ms=int(at_ms),
                points=int(points),
                cause=str(cause),
                contract_id=contract_id,
                period=None if period is None else int(period),
                score_after=int(score_after),
            )
            for at_ms, points, cause, contract_id, period, score_after in rows
        ]


@dataclass(frozen=True, slots=True)
class RankedProvider:
    peer: bytes
    score: int
    price_micro_tokens: int


def rank_providers(
    candidates: Sequence[tuple[bytes, int, int]],
    policy: ReputationPolicy = DEFAULT_POLICY,
) -> list[RankedProvider]:
    """Candidates ``(peer, score, price)`` best first, banned ones dropped (module docstring)."""
    ranked: list[tuple[Fraction, int, int, bytes, RankedProvider]] = []
    for peer, score, price in candidates:
        _check_peer(peer)
        _check_int("score", score, -_INT64_MAX, _INT64_MAX)
        _check_int("price", price, 0, _INT64_MAX)
        if standing(score, policy) is Standing.BANNED:
            continue
        weight = max(1, min(score, policy.rank_score_cap))
        key = (Fraction(price, weight), -score, price, peer)
        ranked.append((*key, RankedProvider(peer, score, price)))
    ranked.sort(key=lambda item: item[:4])
    return [item[4] for item in ranked]
