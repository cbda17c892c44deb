"""Quality of service per contract period, judged against the contract's SLA.

Theory of operation
-------------------
For each audit/payment period of a contract the client collects three kinds
of evidence (SPEC section 6, "Quality assurance"):

- pings: how many it sent and how many were answered -> **uptime** in basis
  points (1 bp = 0.01%);
- real fetches: the latency of each retrieval in milliseconds -> the
  **95th percentile** (nearest-rank), compared with the SLA's retrieval limit;
- audits: how many proof-of-storage challenges were sent and how many
  verified -> **integrity** in basis points.

`assess` compares a `PeriodQuality` with an `Sla` and returns a `SlaOutcome`:

``VIOLATION``
    at least one term was missed; each miss says which term, what was
    required, what was measured, by how much it fell short and how severe
    that is (``severity_bp``, 0..10000, see below).
``EXCEPTIONAL``
    every term met with a wide margin: uptime >= ``Excellence.uptime_bp``
    (99.90%), integrity >= ``Excellence.integrity_bp`` (100%: every audit
    passed) and, when fetches were measured, p95 latency at most
    ``Excellence.latency_bp`` (20%) of the SLA limit (1 s for the seed's 5 s).
``COMPLIANT``
    every term met, not exceptionally. ``merit_bp`` (0..10000) says how far
    the period got from "just compliant" towards "exceptional" (the minimum
    over the terms), so reputation can reward a comfortable margin.

Missing evidence: a period with no pings or no audits cannot be shown to
meet the uptime or integrity term, so zero attempts count as 0 bp (a
violation). Fetches happen only when someone reads the data, so a period
with no fetches leaves the retrieval term unassessed (neither missed nor
exceptional-blocking).

Severity of a miss, capped at 10000 bp ("as bad as it gets"):

- uptime: shortfall / 2000 bp -- 20 percentage points below the SLA is maximal;
- integrity: shortfall / 1000 bp -- 10 points below is maximal (lost data is
  worse than downtime);
- retrieval: excess / limit -- twice the limit is maximal.

All arithmetic is on integers, so every replica computes the same outcome.
This module is pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "BP_PER_UNIT",
    "DEFAULT_EXCELLENCE",
    "DEFAULT_SLA",
    "MAX_LATENCY_SAMPLES",
    "Excellence",
    "Miss",
    "PeriodQuality",
    "Sla",
    "SlaOutcome",
    "Term",
    "Verdict",
    "assess",
    "measure_period",
    "p95_ms",
    "ratio_bp",
]

BP_PER_UNIT = 10_000
MAX_LATENCY_SAMPLES = 1_000_000
MAX_RETRIEVAL_MS = (1 << 32) - 1
# Shortfalls at which a miss reaches full severity (see the module docstring).
UPTIME_FULL_SEVERITY_BP = 2_000
INTEGRITY_FULL_SEVERITY_BP = 1_000


def _check_int(what: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be in {low}..{high}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Sla:
    """Service levels a provider promises; defaults are the seed's."""

    uptime_bp: int = 9_500  # answered pings >= 95.00%
    retrieval_ms: int = 5_000  # p95 fetch latency <= 5 s
    integrity_bp: int = 9_900  # verified audits >= 99.00%

    def __post_init__(self) -> None:
        _check_int("SLA uptime_bp", self.uptime_bp, 0, BP_PER_UNIT)
        _check_int("SLA retrieval_ms", self.retrieval_ms, 1, MAX_RETRIEVAL_MS)
        _check_int("SLA integrity_bp", self.integrity_bp, 0, BP_PER_UNIT)


DEFAULT_SLA = Sla()


@dataclass(frozen=True, slots=True)
class Excellence:
    """What counts as exceptional service (documented in the module docstring)."""

    uptime_bp: int = 9_990
    integrity_bp: int = 10_000
    latency_bp: int = 2_000  # p95 at most this fraction of the SLA limit

    def __post_init__(self) -> None:
        _check_int("excellence uptime_bp", self.uptime_bp, 0, BP_PER_UNIT)
        _check_int("excellence integrity_bp", self.integrity_bp, 0, BP_PER_UNIT)
        _check_int("excellence latency_bp", self.latency_bp, 0, BP_PER_UNIT)


DEFAULT_EXCELLENCE = Excellence()


class Term(StrEnum):
    UPTIME = "uptime"
    RETRIEVAL = "retrieval"
    INTEGRITY = "integrity"


class Verdict(StrEnum):
    EXCEPTIONAL = "exceptional"
    COMPLIANT = "compliant"
    VIOLATION = "violation"


def ratio_bp(ok: int, total: int) -> int:
    """``ok / total`` in basis points, rounded down; 0 when nothing was tried."""
    _check_int("total", total, 0, 1 << 62)
    _check_int("ok", ok, 0, total)
    return 0 if total == 0 else ok * BP_PER_UNIT // total


def p95_ms(latencies_ms: Sequence[int]) -> int | None:
    """Nearest-rank 95th percentile of the latencies; None when there are none."""
    if not latencies_ms:
        return None
    ordered = sorted(latencies_ms)
    rank = -(-95 * len(ordered) // 100)  # ceil(0.95 n), at least 1
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class PeriodQuality:
    """The measured service of one provider during one contract period."""

    uptime_bp: int
    p95_latency_ms: int | None  # None: no fetches were made this period
    integrity_bp: int

    def __post_init__(self) -> None:
        _check_int("uptime_bp", self.uptime_bp, 0, BP_PER_UNIT)
        if self.p95_latency_ms is not None:
            _check_int("p95_latency_ms", self.p95_latency_ms, 0, 1 << 62)
        _check_int("integrity_bp", self.integrity_bp, 0, BP_PER_UNIT)


def measure_period(
    *,
    pings_ok: int,
    pings_total: int,
    latencies_ms: Sequence[int],
    audits_passed: int,
    audits_total: int,
) -> PeriodQuality:
    """Turn a period's raw evidence into a `PeriodQuality`."""
    if len(latencies_ms) > MAX_LATENCY_SAMPLES:
        raise ValueError(f"at most {MAX_LATENCY_SAMPLES} latency samples per period")
    for latency in latencies_ms:
        _check_int("latency", latency, 0, 1 << 62)
    return PeriodQuality(
        uptime_bp=ratio_bp(pings_ok, pings_total),
        p95_latency_ms=p95_ms(latencies_ms),
        integrity_bp=ratio_bp(audits_passed, audits_total),
    )


@dataclass(frozen=True, slots=True)
class Miss:
    """One SLA term the period failed: ``shortfall`` is in bp (uptime,
    integrity) or ms (retrieval); ``severity_bp`` is 0..10000."""

    term: Term
    required: int
    measured: int
    shortfall: int
    severity_bp: int

    def describe(self) -> str:
        unit = "ms" if self.term is Term.RETRIEVAL else "bp"
        relation = ">" if self.term is Term.RETRIEVAL else "<"
        return f"{self.term} {self.measured} {unit} {relation} {self.required} {unit}"


@dataclass(frozen=True, slots=True)
class SlaOutcome:
    verdict: Verdict
    quality: PeriodQuality
    misses: tuple[Miss, ...] = ()
    merit_bp: int = 0  # compliant periods: 0 = just met, 10000 = exceptional on every term

    @property
    def severity_bp(self) -> int:
        """The worst miss (0 when compliant)."""
        return max((miss.severity_bp for miss in self.misses), default=0)

    def describe(self) -> str:
        if self.verdict is Verdict.VIOLATION:
            return "violation (" + ", ".join(miss.describe() for miss in self.misses) + ")"
        return str(self.verdict)


def _scaled(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` as bp, clamped to 0..10000 (a zero span counts as full)."""
    if denominator <= 0:
        return BP_PER_UNIT
    return max(0, min(BP_PER_UNIT, numerator * BP_PER_UNIT // denominator))


def assess(
    quality: PeriodQuality, sla: Sla, excellence: Excellence = DEFAULT_EXCELLENCE
) -> SlaOutcome:
    """Judge one period's measured quality against the SLA."""
    misses: list[Miss] = []
    if quality.uptime_bp < sla.uptime_bp:
        shortfall = sla.uptime_bp - quality.uptime_bp
        misses.append(
            Miss(
                Term.UPTIME,
                sla.uptime_bp,
                quality.uptime_bp,
                shortfall,
                _scaled(shortfall, UPTIME_FULL_SEVERITY_BP),
            )
        )
    latency = quality.p95_latency_ms
    if latency is not None and latency > sla.retrieval_ms:
        excess = latency - sla.retrieval_ms
        misses.append(
            Miss(
                Term.RETRIEVAL,
                sla.retrieval_ms,
                latency,
                excess,
                _scaled(excess, sla.retrieval_ms),
            )
        )
    if quality.integrity_bp < sla.integrity_bp:
        shortfall = sla.integrity_bp - quality.integrity_bp
        misses.append(
            Miss(
                Term.INTEGRITY,
                sla.integrity_bp,
                quality.integrity_bp,
                shortfall,
                _scaled(shortfall, INTEGRITY_FULL_SEVERITY_BP),
            )
        )
    if misses:
        return SlaOutcome(Verdict.VIOLATION, quality, tuple(misses))

    # How far each term got from the SLA towards the excellence bar.
    uptime_bar = max(excellence.uptime_bp, sla.uptime_bp)
    integrity_bar = max(excellence.integrity_bp, sla.integrity_bp)
    merits = [
        _scaled(quality.uptime_bp - sla.uptime_bp, uptime_bar - sla.uptime_bp),
        _scaled(quality.integrity_bp - sla.integrity_bp, integrity_bar - sla.integrity_bp),
    ]
    if latency is not None:
        latency_bar = sla.retrieval_ms * excellence.latency_bp // BP_PER_UNIT
        merits.append(_scaled(sla.retrieval_ms - latency, sla.retrieval_ms - latency_bar))
    merit = min(merits)
    verdict = Verdict.EXCEPTIONAL if merit == BP_PER_UNIT else Verdict.COMPLIANT
    return SlaOutcome(verdict, quality, (), merit)
