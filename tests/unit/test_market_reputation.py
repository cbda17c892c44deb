"""Quality assessment, reputation points and standings, the SQLite book, ranking."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.market.quality import (
    DEFAULT_SLA,
    PeriodQuality,
    Sla,
    SlaOutcome,
    Term,
    Verdict,
    assess,
    measure_period,
    p95_ms,
    ratio_bp,
)
from node.market.reputation import (
    DEFAULT_POLICY,
    RankedProvider,
    ReputationBook,
    ReputationEvent,
    ReputationPolicy,
    Standing,
    period_event,
    points_for,
    rank_providers,
    standing,
)
from node.storage.shards import ShardStore

CONTRACT = bytes(range(32))
PEER = b"provider-a"


def quality(uptime: int = 10_000, p95: int | None = 100, integrity: int = 10_000) -> PeriodQuality:
    return PeriodQuality(uptime_bp=uptime, p95_latency_ms=p95, integrity_bp=integrity)


# -- quality ----------------------------------------------------------------------


def test_measurements() -> None:
    assert ratio_bp(95, 100) == 9_500
    assert ratio_bp(0, 0) == 0
    assert p95_ms([]) is None
    assert p95_ms([7]) == 7
    assert p95_ms(list(range(1, 101))) == 95
    assert p95_ms(list(range(1, 21))) == 19
    q = measure_period(
        pings_ok=99, pings_total=100, latencies_ms=[10, 20], audits_passed=4, audits_total=4
    )
    assert q == PeriodQuality(uptime_bp=9_900, p95_latency_ms=20, integrity_bp=10_000)


def test_exceptional_period() -> None:
    outcome = assess(quality(uptime=9_990, p95=1_000), DEFAULT_SLA)
    assert outcome.verdict is Verdict.EXCEPTIONAL
    assert outcome.merit_bp == 10_000


def test_compliant_period_with_merit() -> None:
    just = assess(quality(uptime=9_500, p95=5_000, integrity=9_900), DEFAULT_SLA)
    assert just.verdict is Verdict.COMPLIANT and just.merit_bp == 0
    better = assess(quality(uptime=9_900, p95=200, integrity=10_000), DEFAULT_SLA)
    assert better.verdict is Verdict.COMPLIANT and 0 < better.merit_bp < 10_000


def test_no_fetches_leave_latency_unassessed() -> None:
    assert assess(quality(p95=None), DEFAULT_SLA).verdict is Verdict.EXCEPTIONAL


def test_missing_evidence_is_a_violation() -> None:
    q = measure_period(pings_ok=0, pings_total=0, latencies_ms=[], audits_passed=0, audits_total=0)
    outcome = assess(q, DEFAULT_SLA)
    assert outcome.verdict is Verdict.VIOLATION
    assert {m.term for m in outcome.misses} == {Term.UPTIME, Term.INTEGRITY}


def test_violation_says_which_terms_and_by_how_much() -> None:
    outcome = assess(quality(uptime=9_000, p95=7_500, integrity=9_950), DEFAULT_SLA)
    assert outcome.verdict is Verdict.VIOLATION
    uptime, retrieval = outcome.misses
    assert (uptime.term, uptime.required, uptime.measured, uptime.shortfall) == (
        Term.UPTIME,
        9_500,
        9_000,
        500,
    )
    assert uptime.severity_bp == 2_500  # 500 of 2000 bp
    assert (retrieval.term, retrieval.shortfall, retrieval.severity_bp) == (
        Term.RETRIEVAL,
        2_500,
        5_000,
    )
    assert outcome.severity_bp == 5_000
    assert outcome.describe() == "violation (uptime 9000 bp < 9500 bp, retrieval 7500 ms > 5000 ms)"


def test_severity_is_capped() -> None:
    outcome = assess(quality(integrity=0), DEFAULT_SLA)
    assert outcome.severity_bp == 10_000


def test_sla_validation() -> None:
    with pytest.raises(ValueError):
        Sla(uptime_bp=10_001)
    with pytest.raises(ValueError):
        Sla(retrieval_ms=0)
    assert Sla() == Sla(uptime_bp=9_500, retrieval_ms=5_000, integrity_bp=9_900)


# -- points ---------------------------------------------------------------------------


quality_strategy = st.builds(
    PeriodQuality,
    uptime_bp=st.integers(0, 10_000),
    p95_latency_ms=st.one_of(st.none(), st.integers(0, 100_000)),
    integrity_bp=st.integers(0, 10_000),
)
sla_strategy = st.builds(
    Sla,
    uptime_bp=st.integers(0, 10_000),
    retrieval_ms=st.integers(1, 60_000),
    integrity_bp=st.integers(0, 10_000),
)


@given(quality_strategy, sla_strategy)
def test_points_are_bounded(q: PeriodQuality, sla: Sla) -> None:
    outcome = assess(q, sla)
    points = points_for(outcome)
    if outcome.verdict is Verdict.VIOLATION:
        assert -500 <= points <= -100
    else:
        assert 100 <= points <= 500
    if outcome.verdict is Verdict.EXCEPTIONAL:
        assert points == 500


def test_points_scale_with_quality() -> None:
    assert points_for(assess(quality(uptime=9_990, p95=100), DEFAULT_SLA)) == 500
    assert points_for(assess(quality(uptime=9_500, p95=5_000, integrity=9_900), DEFAULT_SLA)) == 100
    assert points_for(assess(quality(uptime=9_499), DEFAULT_SLA)) == -100
    assert points_for(assess(quality(uptime=9_000), DEFAULT_SLA)) == -200
    assert points_for(assess(quality(integrity=0), DEFAULT_SLA)) == -500


def test_thresholds() -> None:
    assert standing(1_000) is Standing.NORMAL
    assert standing(2_000) is Standing.HIGH
    assert standing(1_999) is Standing.NORMAL
    assert standing(499) is Standing.LOW
    assert standing(500) is Standing.NORMAL
    assert standing(200) is Standing.LOW
    assert standing(199) is Standing.BANNED
    strict = ReputationPolicy(banned=400)
    assert standing(300, strict) is Standing.BANNED


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        ReputationPolicy(low=100, banned=200)
    with pytest.raises(ValueError):
        ReputationPolicy(max_gain=50)


# -- the book ---------------------------------------------------------------------------


def outcome_of(verdict: Verdict) -> SlaOutcome:
    if verdict is Verdict.VIOLATION:
        return assess(quality(uptime=7_000), DEFAULT_SLA)
    if verdict is Verdict.COMPLIANT:
        return assess(quality(uptime=9_500, p95=5_000, integrity=9_900), DEFAULT_SLA)
    return assess(quality(), DEFAULT_SLA)


def test_new_provider_starts_at_1000(tmp_path: Path) -> None:
    with ReputationBook(tmp_path / "node.db") as book:
        assert book.score(PEER) == 1_000
        assert book.history(PEER) == []
        assert book.standing(PEER) is Standing.NORMAL


def test_history_records_causes(tmp_path: Path) -> None:
    with ReputationBook(tmp_path / "node.db") as book:
        assert book.record(
            PEER, period_event(outcome_of(Verdict.EXCEPTIONAL), CONTRACT, 0, 10)
        ) == (1_500)
        assert book.record(PEER, period_event(outcome_of(Verdict.VIOLATION), CONTRACT, 1, 20)) == (
            1_000
        )
        assert book.record(PEER, ReputationEvent(-50, "operator: manual correction", 30)) == 950
        newest, middle, oldest = book.history(PEER)
        assert (newest.at_ms, newest.points, newest.cause) == (
            30,
            -50,
            "operator: manual correction",
        )
        assert (newest.contract_id, newest.period, newest.score_after) == (None, None, 950)
        assert middle.points == -500 and middle.period == 1 and middle.contract_id == CONTRACT
        assert middle.cause == (
            f"contract {CONTRACT.hex()[:16]} period 1: violation (uptime 7000 bp < 9500 bp)"
        )
        assert oldest.cause.endswith("period 0: exceptional")
        assert book.history(PEER, limit=1) == [newest]


def test_a_period_counts_once(tmp_path: Path) -> None:
    with ReputationBook(tmp_path / "node.db") as book:
        event = period_event(outcome_of(Verdict.COMPLIANT), CONTRACT, 0, 10)
        assert book.record(PEER, event) == 1_100
        assert book.record(PEER, event) == 1_100
        assert len(book.history(PEER)) == 1
        assert book.record(b"another", event) == 1_100  # other peers are separate


def test_scores_are_clamped(tmp_path: Path) -> None:
    with ReputationBook(tmp_path / "node.db") as book:
        for period in range(4):
            book.record(PEER, period_event(outcome_of(Verdict.VIOLATION), CONTRACT, period, period))
        assert book.score(PEER) == 0
        assert [change.points for change in book.history(PEER)] == [0, 0, -500, -500]
        assert sum(change.points for change in book.history(PEER)) == -1_000
        assert book.standing(PEER) is Standing.BANNED


def test_record_rejects_bad_input(tmp_path: Path) -> None:
    with ReputationBook(tmp_path / "node.db") as book:
        with pytest.raises(ValueError):
            book.record(PEER, ReputationEvent(10, "", 0))
        with pytest.raises(ValueError):
            book.record(PEER, ReputationEvent(10, "x", 0, contract_id=CONTRACT))
        with pytest.raises(ValueError):
            book.record(b"", ReputationEvent(10, "x", 0))
        assert book.history(PEER) == []


def test_persistence_across_reopen(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    with ReputationBook(db) as book:
        book.record(PEER, period_event(outcome_of(Verdict.EXCEPTIONAL), CONTRACT, 0, 10))
    with ReputationBook(db) as book:
        assert book.score(PEER) == 1_500
        assert [c.period for c in book.history(PEER)] == [0]
    conn = sqlite3.connect(db)
    try:
        versions = dict(conn.execute("SELECT component, version FROM schema_versions"))
    finally:
        conn.close()
    assert versions["reputation"] == 1


def test_shares_the_node_database(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    with ShardStore(tmp_path / "shards", db, max_bytes=1 << 20), ReputationBook(db) as book:
        assert book.record(PEER, ReputationEvent(100, "test", 0)) == 1_100
    conn = sqlite3.connect(db)
    try:
        components = {row[0] for row in conn.execute("SELECT component FROM schema_versions")}
    finally:
        conn.close()
    assert {"shards", "reputation"} <= components


# -- ranking ----------------------------------------------------------------------------


def peers(ranked: list[RankedProvider]) -> list[bytes]:
    return [r.peer for r in ranked]


def test_ban_excludes_from_ranking() -> None:
    ranked = rank_providers([(b"cheap-but-banned", 150, 1), (b"ok", 1_000, 100)])
    assert peers(ranked) == [b"ok"]


def test_ranking_prefers_reputation_and_price() -> None:
    candidates = [
        (b"a", 1_000, 100),  # 0.100 per point
        (b"b", 2_000, 150),  # 0.075 per point
        (b"c", 1_000, 80),  # 0.080 per point
        (b"d", 500, 40),  # 0.080 per point, lower score than c
        (b"e", 9_999, 400),  # score capped at 3000: 0.133 per point
    ]
    assert peers(rank_providers(candidates)) == [b"b", b"c", b"d", b"a", b"e"]


def test_ranking_equal_reputation_cheaper_first_and_deterministic() -> None:
    candidates = [(b"y", 1_200, 100), (b"x", 1_200, 100), (b"z", 1_200, 90)]
    assert peers(rank_providers(candidates)) == [b"z", b"x", b"y"]
    assert rank_providers(list(reversed(candidates))) == rank_providers(candidates)


def test_ranking_with_a_stricter_policy() -> None:
    policy = ReputationPolicy(banned=450, low=500)
    assert peers(rank_providers([(b"a", 400, 1), (b"b", 1_000, 5)], policy)) == [b"b"]
    assert DEFAULT_POLICY.banned == 200
