"""The pricing engine: what storing some bytes for some time costs, line by line.

Theory of operation
-------------------
A quote is a pure function of a :class:`PricingPolicy` (the node's
``[market.pricing]`` settings) and a :class:`QuoteInput` (what the client asks
for and what we know about the provider). No clock, no I/O, no floats: money
is an integer number of micro-tokens (1 token = 1,000,000 micro-tokens) and
every percentage is an integer number of basis points (1 bp = 0.01%).

The quote is built as a chain of subtotals, and every line on it is the
difference between two of them, in this order:

1. **base storage**: ``size_bytes * duration * base price``. A GB is 10^9
   bytes (SI, as disks are sold; a GiB would be 7.4% dearer and nobody reads
   a bill in GiB) and a day is 86,400 seconds, so the base line is
   ``size_bytes * duration_seconds * base_price_micro_per_gb_day /
   (10^9 * 86,400)``.
2. **tier adjustment**: the base times the tier's ``price_percent`` (hot 150,
   warm 100, cold 60, archive 30), shown as the change from the base, so it is
   negative for the cheap tiers.
3. **supply/demand adjustment**: the tiered price times a multiplier read off
   the provider's utilisation (used / capacity) — see "Utilisation curve".
   The result is the *storage price*.
4. **SLA quality premium**: ``sla_premium_bp`` (10%) of the storage price,
   only when the client asks for SLA guarantees.
5. **performance bonus**: up to ``bonus_max_bp`` (15%) of the storage price
   for a provider whose measured quality is at or above
   ``bonus_threshold_bp``; it grows linearly from 0 at the threshold to the
   full bonus at 10,000 bp (perfect), and is 0 below the threshold or when no
   quality has been measured yet. The premium and the bonus both apply to the
   storage price, so they add up rather than compound. Their sum is the
   *provider price*: what the provider is paid.
6. **network fee**: ``network_fee_bp`` (5%) of the provider price.
7. **escrow fee**: ``escrow_fee_bp`` (2%) of the provider price. Fees are
   charged on the provider price, never on each other.

The total is the sum of the seven lines, and the breakdown always has all
seven (a line that does not apply is 0 and says why), so a client or a UI can
rely on the shape.

Rounding rule
-------------
Each subtotal is computed exactly (``fractions.Fraction``) from the *rounded*
figures printed above it, then rounded once to a whole micro-token, half up
(ties go toward +infinity: ``floor(x + 1/2)``). A line is the difference of two
rounded subtotals (or, for premiums and fees, its own rounded amount), so

* every line is an integer and the lines sum to the total exactly, by
  construction;
* anyone can check a quote with pencil and paper from the lines it shows:
  "5% of 110.000000 tokens is 5.500000 tokens" holds for the printed figures;
* rounding is monotone, so the total never decreases when size, duration,
  utilisation, tier percent or quality grows.

Each line is therefore within half a micro-token of its exact value; very
small quotes (a few bytes for a few seconds) honestly round to 0. A minimum
charge, if the market wants one, is policy for the contract layer.

Utilisation curve
-----------------
The supply/demand multiplier is a piecewise-linear curve through knots of
``(utilisation_bp, multiplier_bp)``. The default is::

    utilisation   0%    50%    80%    100%
    multiplier   0.80  1.00   1.25   2.00

An empty provider sells cheaply to attract data; a half-full one charges the
list price; from 80% the price climbs steeply, because the last free space is
scarce and a full node should push new data to emptier ones. Between knots the
multiplier is interpolated exactly (a Fraction, never a float). A policy's
curve must start at 0 bp, end at 10,000 bp, have strictly increasing
utilisations and non-decreasing multipliers — so the multiplier is monotone
and bounded by the first and last knots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from fractions import Fraction
from itertools import pairwise
from typing import Any

MICRO_PER_TOKEN = 1_000_000
BYTES_PER_GB = 10**9
SECONDS_PER_DAY = 86_400
BP_PER_UNIT = 10_000  # basis points in 100%

# Sanity bounds on a request. Python ints do not overflow; these only turn a
# caller's unit mistake (bytes vs. kilobytes, ms vs. s) into a clear error.
MAX_SIZE_BYTES = 10**18  # one exabyte
MAX_DURATION_SECONDS = 100 * 365 * SECONDS_PER_DAY  # about a century
MAX_TIER_PERCENT = 1_000
# Sanity bounds on a policy: fees of at most 100% and a multiplier of at most 10x.
MAX_POLICY_BP = BP_PER_UNIT
MAX_MULTIPLIER_BP = 10 * BP_PER_UNIT

DEFAULT_UTILISATION_CURVE: tuple[tuple[int, int], ...] = (
    (0, 8_000),
    (5_000, 10_000),
    (8_000, 12_500),
    (10_000, 20_000),
)


class PricingError(ValueError):
    """A policy or a request that cannot be priced; the message names the field."""


def _require_int(where: str, value: object, low: int, high: int) -> int:
    # bool is an int subclass, but `sla_premium_bp = true` is a typo, not 1 bp.
    if not isinstance(value, int) or isinstance(value, bool):
        raise PricingError(f"{where} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise PricingError(f"{where} must be in {low:,}..{high:,}, not {value:,}")
    return value


@dataclass(frozen=True)
class PricingPolicy:
    """The market's price settings; the defaults are the seed's numbers."""

    base_price_micro_per_gb_day: int = 100 * MICRO_PER_TOKEN
    sla_premium_bp: int = 1_000
    network_fee_bp: int = 500
    escrow_fee_bp: int = 200
    bonus_max_bp: int = 1_500
    bonus_threshold_bp: int = 9_000
    utilisation_curve: tuple[tuple[int, int], ...] = DEFAULT_UTILISATION_CURVE

    def __post_init__(self) -> None:
        where = "market.pricing"
        # A free network (price 0) is a legitimate test setup; the cap is 1M tokens.
        _require_int(
            f"{where}.base_price_micro_per_gb_day",
            self.base_price_micro_per_gb_day,
            0,
            10**6 * MICRO_PER_TOKEN,
        )
        for name in ("sla_premium_bp", "network_fee_bp", "escrow_fee_bp", "bonus_max_bp"):
            _require_int(f"{where}.{name}", getattr(self, name), 0, MAX_POLICY_BP)
        # Below 10,000 so that the bonus ramp has a width to divide by.
        _require_int(f"{where}.bonus_threshold_bp", self.bonus_threshold_bp, 0, BP_PER_UNIT - 1)
        _check_curve(f"{where}.utilisation_curve", self.utilisation_curve)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> PricingPolicy:
        """Build a policy from a ``[market.pricing]`` TOML table over the defaults.

        Keys are the field names; ``utilisation_curve`` is an array of
        ``[utilisation_bp, multiplier_bp]`` pairs. Unknown keys are refused so
        a misspelt setting never silently falls back to its default.
        """
        if not isinstance(table, Mapping):
            raise PricingError("market.pricing must be a table")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(key) for key in table if key not in known)
        if unknown:
            raise PricingError(f"market.pricing: unknown setting {', '.join(unknown)}")
        values = dict(table)
        if "utilisation_curve" in values:
            values["utilisation_curve"] = _curve_from_toml(values["utilisation_curve"])
        return cls(**values)

    def multiplier(self, utilisation_bp: int) -> Fraction:
        """The supply/demand multiplier (1 = list price) at a utilisation."""
        _require_int("utilisation_bp", utilisation_bp, 0, BP_PER_UNIT)
        for (x0, y0), (x1, y1) in pairwise(self.utilisation_curve):
            if utilisation_bp <= x1:
                multiplier_bp = y0 + Fraction((utilisation_bp - x0) * (y1 - y0), x1 - x0)
                return multiplier_bp / BP_PER_UNIT
        raise AssertionError("unreachable: the curve ends at 10,000 bp")  # pragma: no cover

    def bonus(self, quality_bp: int | None) -> Fraction:
        """The performance bonus as a fraction of the storage price (0 .. bonus_max)."""
        if quality_bp is None or quality_bp < self.bonus_threshold_bp:
            return Fraction(0)
        ramp = Fraction(quality_bp - self.bonus_threshold_bp, BP_PER_UNIT - self.bonus_threshold_bp)
        return ramp * self.bonus_max_bp / BP_PER_UNIT


def _check_curve(where: str, curve: object) -> None:
    if not isinstance(curve, tuple) or len(curve) < 2:
        raise PricingError(f"{where} needs at least two (utilisation_bp, multiplier_bp) knots")
    for i, knot in enumerate(curve):
        if not isinstance(knot, tuple) or len(knot) != 2:
            raise PricingError(f"{where}[{i}] must be a (utilisation_bp, multiplier_bp) pair")
        _require_int(f"{where}[{i}] utilisation_bp", knot[0], 0, BP_PER_UNIT)
        # A multiplier of 0 would make storage free at low utilisation; refuse it.
        _require_int(f"{where}[{i}] multiplier_bp", knot[1], 1, MAX_MULTIPLIER_BP)
    if curve[0][0] != 0 or curve[-1][0] != BP_PER_UNIT:
        raise PricingError(f"{where} must start at 0 bp and end at {BP_PER_UNIT:,} bp")
    for i in range(1, len(curve)):
        if curve[i][0] <= curve[i - 1][0]:
            raise PricingError(f"{where}[{i}] utilisation_bp must be above the previous knot's")
        if curve[i][1] < curve[i - 1][1]:
            raise PricingError(f"{where}[{i}] multiplier_bp must not fall below the previous")


def _curve_from_toml(raw: object) -> tuple[tuple[int, int], ...]:
    # TOML arrays arrive as lists; the frozen policy keeps tuples. The element
    # checks themselves live in _check_curve so both paths say the same thing.
    if not isinstance(raw, list | tuple):
        raise PricingError("market.pricing.utilisation_curve must be an array of pairs")
    knots: list[tuple[Any, ...]] = []
    for i, knot in enumerate(raw):
        if not isinstance(knot, list | tuple):
            raise PricingError(
                f"market.pricing.utilisation_curve[{i}] must be a (utilisation_bp, "
                "multiplier_bp) pair"
            )
        knots.append(tuple(knot))
    return tuple(knots)


@dataclass(frozen=True)
class QuoteInput:
    """What is being priced.

    ``size_bytes`` must be at least 1: a contract for nothing is a caller's bug,
    not a free quote. ``duration_seconds`` is seconds because contracts and
    audit periods are; the price is still quoted per day. ``utilisation_bp`` is
    the provider's used / capacity in basis points (see :func:`utilisation_bp`).
    ``quality_bp`` is the provider's measured service quality (0..10,000), or
    ``None`` when nothing has been measured yet (no bonus).
    """

    size_bytes: int
    duration_seconds: int
    tier_percent: int = 100
    sla_requested: bool = False
    utilisation_bp: int = 5_000
    quality_bp: int | None = None

    def __post_init__(self) -> None:
        _require_int("size_bytes", self.size_bytes, 1, MAX_SIZE_BYTES)
        _require_int("duration_seconds", self.duration_seconds, 1, MAX_DURATION_SECONDS)
        _require_int("tier_percent", self.tier_percent, 1, MAX_TIER_PERCENT)
        if not isinstance(self.sla_requested, bool):
            raise PricingError("sla_requested must be a bool")
        _require_int("utilisation_bp", self.utilisation_bp, 0, BP_PER_UNIT)
        if self.quality_bp is not None:
            _require_int("quality_bp", self.quality_bp, 0, BP_PER_UNIT)


@dataclass(frozen=True)
class PriceLine:
    """One line of a quote. ``key`` is stable for programs; ``label`` is for people."""

    key: str
    label: str
    micro_tokens: int
    detail: str


@dataclass(frozen=True)
class PriceBreakdown:
    """A quote: its lines in order, and their exact sum."""

    lines: tuple[PriceLine, ...]
    total_micro_tokens: int

    def __post_init__(self) -> None:
        if sum(line.micro_tokens for line in self.lines) != self.total_micro_tokens:
            raise PricingError("total_micro_tokens must equal the sum of the lines")

    def line(self, key: str) -> PriceLine:
        """The line with this key (``base``, ``tier``, ``supply_demand``, ...)."""
        for line in self.lines:
            if line.key == key:
                return line
        raise KeyError(key)

    @property
    def provider_micro_tokens(self) -> int:
        """What the provider is paid: the total less the network and escrow fees."""
        fees = self.line("network_fee").micro_tokens + self.line("escrow_fee").micro_tokens
        return self.total_micro_tokens - fees

    def render(self) -> str:
        """The quote as aligned text, one line per line plus the total."""
        width = max(len(line.label) for line in self.lines)
        rows = [
            f"{line.label:<{width}}  {format_tokens(line.micro_tokens):>22}  {line.detail}"
            for line in self.lines
        ]
        rows.append(f"{'total':<{width}}  {format_tokens(self.total_micro_tokens):>22}")
        return "\n".join(rows)


LINE_KEYS = (
    "base",
    "tier",
    "supply_demand",
    "sla_premium",
    "performance_bonus",
    "network_fee",
    "escrow_fee",
)


def round_half_up(amount: Fraction) -> int:
    """``floor(amount + 1/2)``: the nearest integer, ties toward +infinity."""
    return (2 * amount.numerator + amount.denominator) // (2 * amount.denominator)


def quote_price(policy: PricingPolicy, request: QuoteInput) -> PriceBreakdown:
    """Price ``request`` under ``policy``; see the module docstring for the rules."""
    # 1. Base storage, rounded once from the exact product.
    base = round_half_up(
        Fraction(
            request.size_bytes * request.duration_seconds * policy.base_price_micro_per_gb_day,
            BYTES_PER_GB * SECONDS_PER_DAY,
        )
    )
    # 2-3. Tier and supply/demand multiply a running subtotal; each line is the
    # change it makes, so the negative adjustments of cheap tiers show as such.
    tiered = round_half_up(Fraction(base * request.tier_percent, 100))
    multiplier = policy.multiplier(request.utilisation_bp)
    storage = round_half_up(tiered * multiplier)
    # 4-5. Premium and bonus both on the storage price: additive, not compounding.
    sla = (
        round_half_up(Fraction(storage * policy.sla_premium_bp, BP_PER_UNIT))
        if request.sla_requested
        else 0
    )
    bonus_rate = policy.bonus(request.quality_bp)
    bonus = round_half_up(storage * bonus_rate)
    provider = storage + sla + bonus
    # 6-7. Fees on what the provider is paid, never on each other.
    network = round_half_up(Fraction(provider * policy.network_fee_bp, BP_PER_UNIT))
    escrow = round_half_up(Fraction(provider * policy.escrow_fee_bp, BP_PER_UNIT))

    lines = (
        PriceLine(
            "base",
            "base storage",
            base,
            f"{format_tokens(policy.base_price_micro_per_gb_day)} tokens/GB/day"
            f" x {_format_gb(request.size_bytes)}"
            f" x {_format_duration(request.duration_seconds)}",
        ),
        PriceLine(
            "tier",
            "tier adjustment",
            tiered - base,
            f"{request.tier_percent}% of {format_tokens(base)}",
        ),
        PriceLine(
            "supply_demand",
            "supply/demand adjustment",
            storage - tiered,
            f"utilisation {_format_bp(request.utilisation_bp)}"
            f" → x{_format_ratio(multiplier, 4)} of {format_tokens(tiered)}",
        ),
        PriceLine(
            "sla_premium",
            "SLA quality premium",
            sla,
            f"{_format_bp(policy.sla_premium_bp)} of {format_tokens(storage)}"
            if request.sla_requested
            else "SLA not requested",
        ),
        PriceLine(
            "performance_bonus",
            "performance bonus",
            bonus,
            _bonus_detail(policy, request.quality_bp, bonus_rate, storage),
        ),
        PriceLine(
            "network_fee",
            "network fee",
            network,
            f"{_format_bp(policy.network_fee_bp)} of {format_tokens(provider)}",
        ),
        PriceLine(
            "escrow_fee",
            "escrow fee",
            escrow,
            f"{_format_bp(policy.escrow_fee_bp)} of {format_tokens(provider)}",
        ),
    )
    return PriceBreakdown(lines, sum(line.micro_tokens for line in lines))


def utilisation_bp(used_bytes: int, capacity_bytes: int) -> int:
    """A provider's used / capacity in basis points, rounded down, at most 10,000.

    An over-committed provider (used > capacity) counts as full rather than an
    error: it is still a provider, and the curve's top is its price.
    """
    _require_int("capacity_bytes", capacity_bytes, 1, MAX_SIZE_BYTES)
    _require_int("used_bytes", used_bytes, 0, MAX_SIZE_BYTES)
    return min(BP_PER_UNIT, used_bytes * BP_PER_UNIT // capacity_bytes)


def format_tokens(micro: int) -> str:
    """Micro-tokens as tokens with six decimals and thousands separators, exactly.

    ``format_tokens(3_000_000_000) == "3,000.000000"``;
    ``format_tokens(-500_000) == "-0.500000"``.
    """
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO_PER_TOKEN)
    return f"{sign}{whole:,}.{frac:06d}"


def _format_ratio(value: Fraction, places: int) -> str:
    # Exact decimals when they fit in `places`, otherwise rounded and marked "≈".
    scale = 10**places
    scaled = round_half_up(value * scale)
    whole, frac = divmod(scaled, scale)
    text = f"{whole:,}.{frac:0{places}d}"
    return text if Fraction(scaled, scale) == value else f"≈{text}"


def _format_bp(bp: int) -> str:
    return f"{_format_ratio(Fraction(bp, 100), 2)}%"


def _format_gb(size_bytes: int) -> str:
    return f"{_format_ratio(Fraction(size_bytes, BYTES_PER_GB), 9)} GB"


def _format_duration(seconds: int) -> str:
    days, rest = divmod(seconds, SECONDS_PER_DAY)
    if rest == 0:
        return f"{days:,} day" + ("" if days == 1 else "s")
    return f"{seconds:,} s ({_format_ratio(Fraction(seconds, SECONDS_PER_DAY), 6)} days)"


def _bonus_detail(
    policy: PricingPolicy, quality_bp: int | None, rate: Fraction, storage: int
) -> str:
    if quality_bp is None:
        return "no measured quality yet"
    threshold = _format_bp(policy.bonus_threshold_bp)
    if quality_bp < policy.bonus_threshold_bp:
        return f"quality {_format_bp(quality_bp)} below the {threshold} threshold"
    return (
        f"quality {_format_bp(quality_bp)} (threshold {threshold})"
        f" → {_format_ratio(rate * 100, 4)}% of {format_tokens(storage)}"
    )
