"""The pricing engine: the seed's numbers by hand, exact arithmetic, bad input."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.market.pricing import (
    DEFAULT_UTILISATION_CURVE,
    LINE_KEYS,
    MAX_DURATION_SECONDS,
    PriceBreakdown,
    PriceLine,
    PricingError,
    PricingPolicy,
    QuoteInput,
    format_tokens,
    quote_price,
    round_half_up,
    utilisation_bp,
)

GB = 10**9
DAY = 86_400
TOKEN = 1_000_000
POLICY = PricingPolicy()


def amounts(breakdown: PriceBreakdown) -> tuple[int, ...]:
    return tuple(line.micro_tokens for line in breakdown.lines)


# Every expected figure below was worked out by hand from the seed numbers
# (base 100 tokens/GB/day, SLA +10%, bonus up to +15% from 90% quality,
# network 5%, escrow 2%) and the documented curve; none comes from the code.
# Columns: base, tier, supply/demand, SLA, bonus, network fee, escrow fee; total.
SEED_ROWS: list[tuple[str, QuoteInput, tuple[int, ...], int]] = [
    (
        "warm, list price, no extras",
        QuoteInput(GB, DAY),
        (100 * TOKEN, 0, 0, 0, 0, 5 * TOKEN, 2 * TOKEN),
        107 * TOKEN,
    ),
    (
        "SLA premium: 10% of 100, fees on 110",
        QuoteInput(GB, DAY, sla_requested=True),
        (100 * TOKEN, 0, 0, 10 * TOKEN, 0, 5_500_000, 2_200_000),
        117_700_000,
    ),
    (
        "hot tier 150%",
        QuoteInput(GB, DAY, tier_percent=150),
        (100 * TOKEN, 50 * TOKEN, 0, 0, 0, 7_500_000, 3 * TOKEN),
        160_500_000,
    ),
    (
        "cold tier 60%",
        QuoteInput(GB, DAY, tier_percent=60),
        (100 * TOKEN, -40 * TOKEN, 0, 0, 0, 3 * TOKEN, 1_200_000),
        64_200_000,
    ),
    (
        "archive tier 30%",
        QuoteInput(GB, DAY, tier_percent=30),
        (100 * TOKEN, -70 * TOKEN, 0, 0, 0, 1_500_000, 600_000),
        32_100_000,
    ),
    (
        "empty provider: 0.8x",
        QuoteInput(GB, DAY, utilisation_bp=0),
        (100 * TOKEN, 0, -20 * TOKEN, 0, 0, 4 * TOKEN, 1_600_000),
        85_600_000,
    ),
    (
        "quarter full: 0.9x",
        QuoteInput(GB, DAY, utilisation_bp=2_500),
        (100 * TOKEN, 0, -10 * TOKEN, 0, 0, 4_500_000, 1_800_000),
        96_300_000,
    ),
    (
        "90% full: 1.25 + half of 0.75 = 1.625x",
        QuoteInput(GB, DAY, utilisation_bp=9_000),
        (100 * TOKEN, 0, 62_500_000, 0, 0, 8_125_000, 3_250_000),
        173_875_000,
    ),
    (
        "full provider: 2.0x",
        QuoteInput(GB, DAY, utilisation_bp=10_000),
        (100 * TOKEN, 0, 100 * TOKEN, 0, 0, 10 * TOKEN, 4 * TOKEN),
        214 * TOKEN,
    ),
    (
        "quality just below the threshold: no bonus",
        QuoteInput(GB, DAY, quality_bp=8_999),
        (100 * TOKEN, 0, 0, 0, 0, 5 * TOKEN, 2 * TOKEN),
        107 * TOKEN,
    ),
    (
        "quality at the threshold: bonus starts at 0",
        QuoteInput(GB, DAY, quality_bp=9_000),
        (100 * TOKEN, 0, 0, 0, 0, 5 * TOKEN, 2 * TOKEN),
        107 * TOKEN,
    ),
    (
        "quality halfway up the ramp: 7.5%",
        QuoteInput(GB, DAY, quality_bp=9_500),
        (100 * TOKEN, 0, 0, 0, 7_500_000, 5_375_000, 2_150_000),
        115_025_000,
    ),
    (
        "perfect quality: the full 15%",
        QuoteInput(GB, DAY, quality_bp=10_000),
        (100 * TOKEN, 0, 0, 0, 15 * TOKEN, 5_750_000, 2_300_000),
        123_050_000,
    ),
    (
        "everything at once, 30 days: 3000 → 4500 → 9000; +900 +1350 = 11250",
        QuoteInput(
            GB,
            30 * DAY,
            tier_percent=150,
            sla_requested=True,
            utilisation_bp=10_000,
            quality_bp=10_000,
        ),
        (
            3_000 * TOKEN,
            1_500 * TOKEN,
            4_500 * TOKEN,
            900 * TOKEN,
            1_350 * TOKEN,
            562_500_000,
            225 * TOKEN,
        ),
        12_037_500_000,
    ),
    (
        "half a day",
        QuoteInput(GB, DAY // 2),
        (50 * TOKEN, 0, 0, 0, 0, 2_500_000, 1 * TOKEN),
        53_500_000,
    ),
    (
        "rounding: 100 bytes for a day is 10 micro; network 0.5 → 1, escrow 0.2 → 0",
        QuoteInput(100, DAY),
        (10, 0, 0, 0, 0, 1, 0),
        11,
    ),
    (
        "rounding: 5 bytes is 0.5 micro → 1",
        QuoteInput(5, DAY),
        (1, 0, 0, 0, 0, 0, 0),
        1,
    ),
    (
        "rounding: 1 byte is 0.1 micro → 0, an honest zero",
        QuoteInput(1, DAY),
        (0, 0, 0, 0, 0, 0, 0),
        0,
    ),
    (
        "rounding: archive of 5 micro is 1.5 → 2, so the tier line is -3",
        QuoteInput(50, DAY, tier_percent=30),
        (5, -3, 0, 0, 0, 0, 0),
        2,
    ),
]


@pytest.mark.parametrize(
    ("request_", "expected_lines", "expected_total"),
    [row[1:] for row in SEED_ROWS],
    ids=[row[0] for row in SEED_ROWS],
)
def test_seed_numbers_by_hand(
    request_: QuoteInput, expected_lines: tuple[int, ...], expected_total: int
) -> None:
    quote = quote_price(POLICY, request_)
    assert tuple(line.key for line in quote.lines) == LINE_KEYS
    assert amounts(quote) == expected_lines
    assert quote.total_micro_tokens == expected_total


def test_every_line_explains_itself() -> None:
    quote = quote_price(
        POLICY,
        QuoteInput(GB, 30 * DAY, tier_percent=150, sla_requested=True, quality_bp=9_500),
    )
    details = {line.key: line.detail for line in quote.lines}
    assert details["base"] == "100.000000 tokens/GB/day x 1.000000000 GB x 30 days"
    assert details["tier"] == "150% of 3,000.000000"
    assert details["supply_demand"] == "utilisation 50.00% → x1.0000 of 4,500.000000"
    assert details["sla_premium"] == "10.00% of 4,500.000000"
    assert details["performance_bonus"] == (
        "quality 95.00% (threshold 90.00%) → 7.5000% of 4,500.000000"
    )
    assert details["network_fee"] == "5.00% of 5,287.500000"
    assert details["escrow_fee"] == "2.00% of 5,287.500000"
    assert quote.provider_micro_tokens == 5_287_500_000
    assert "total" in quote.render()


def test_lines_that_do_not_apply_say_why() -> None:
    quote = quote_price(POLICY, QuoteInput(GB, 1, quality_bp=100))
    assert quote.line("sla_premium").detail == "SLA not requested"
    assert quote.line("performance_bonus").detail == "quality 1.00% below the 90.00% threshold"
    assert quote.line("base").detail.endswith("x 1 s (≈0.000012 days)")
    unmeasured = quote_price(POLICY, QuoteInput(GB, DAY))
    assert unmeasured.line("performance_bonus").detail == "no measured quality yet"
    with pytest.raises(KeyError):
        unmeasured.line("tip")


def test_a_breakdown_that_does_not_add_up_is_refused() -> None:
    with pytest.raises(PricingError, match="sum of the lines"):
        PriceBreakdown((PriceLine("base", "base storage", 5, ""),), 6)


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        (0, "0.000000"),
        (1, "0.000001"),
        (3_000 * TOKEN, "3,000.000000"),
        (1_234_567_890_123, "1,234,567.890123"),
        (-500_000, "-0.500000"),
    ],
)
def test_format_tokens_is_exact(micro: int, text: str) -> None:
    assert format_tokens(micro) == text


@pytest.mark.parametrize(
    ("amount", "rounded"),
    [
        (Fraction(1, 2), 1),
        (Fraction(3, 2), 2),
        (Fraction(49, 100), 0),
        (Fraction(-1, 2), 0),
        (Fraction(-7, 2), -3),
        (Fraction(-51, 100), -1),
    ],
)
def test_round_half_up_sends_ties_toward_plus_infinity(amount: Fraction, rounded: int) -> None:
    assert round_half_up(amount) == rounded


def test_utilisation_from_bytes() -> None:
    assert utilisation_bp(0, 1_000) == 0
    assert utilisation_bp(1, 3) == 3_333
    assert utilisation_bp(500, 1_000) == 5_000
    assert utilisation_bp(2_000, 1_000) == 10_000  # over-committed counts as full
    with pytest.raises(PricingError, match="capacity_bytes"):
        utilisation_bp(0, 0)
    with pytest.raises(PricingError, match="used_bytes"):
        utilisation_bp(-1, 10)


# --- properties ---------------------------------------------------------------

sizes = st.integers(1, 10**15)
durations = st.integers(1, 10 * 365 * DAY)
tiers = st.sampled_from([150, 100, 60, 30]) | st.integers(1, 1_000)
bps = st.integers(0, 10_000)
qualities = st.none() | bps


@st.composite
def requests(draw: st.DrawFn) -> QuoteInput:
    return QuoteInput(
        size_bytes=draw(sizes),
        duration_seconds=draw(durations),
        tier_percent=draw(tiers),
        sla_requested=draw(st.booleans()),
        utilisation_bp=draw(bps),
        quality_bp=draw(qualities),
    )


@st.composite
def curves(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    inner = sorted(draw(st.sets(st.integers(1, 9_999), max_size=6)))
    xs = [0, *inner, 10_000]
    ys = sorted(draw(st.lists(st.integers(1, 100_000), min_size=len(xs), max_size=len(xs))))
    return tuple(zip(xs, ys, strict=True))


@st.composite
def policies(draw: st.DrawFn) -> PricingPolicy:
    return PricingPolicy(
        base_price_micro_per_gb_day=draw(st.integers(0, 10**12)),
        sla_premium_bp=draw(bps),
        network_fee_bp=draw(bps),
        escrow_fee_bp=draw(bps),
        bonus_max_bp=draw(bps),
        bonus_threshold_bp=draw(st.integers(0, 9_999)),
        utilisation_curve=draw(curves()),
    )


@given(policies(), requests())
def test_lines_sum_to_the_total_and_only_adjustments_go_negative(
    policy: PricingPolicy, request_: QuoteInput
) -> None:
    quote = quote_price(policy, request_)
    assert sum(amounts(quote)) == quote.total_micro_tokens
    assert quote.total_micro_tokens >= 0
    for line in quote.lines:
        if line.key not in ("tier", "supply_demand"):
            assert line.micro_tokens >= 0, line


@given(requests(), st.integers(0, 10**12))
def test_lines_match_the_exact_price_to_half_a_micro_token(
    request_: QuoteInput, base_price: int
) -> None:
    # The base line alone: exact value from first principles, no code reused.
    policy = PricingPolicy(base_price_micro_per_gb_day=base_price)
    exact = Fraction(request_.size_bytes * request_.duration_seconds * base_price, GB * DAY)
    assert abs(quote_price(policy, request_).line("base").micro_tokens - exact) <= Fraction(1, 2)


def _total(policy: PricingPolicy, request_: QuoteInput, **changes: Any) -> int:
    fields: dict[str, Any] = {
        "size_bytes": request_.size_bytes,
        "duration_seconds": request_.duration_seconds,
        "tier_percent": request_.tier_percent,
        "sla_requested": request_.sla_requested,
        "utilisation_bp": request_.utilisation_bp,
        "quality_bp": request_.quality_bp,
    }
    fields.update(changes)
    return quote_price(policy, QuoteInput(**fields)).total_micro_tokens


@given(policies(), requests(), sizes, durations, bps, bps)
def test_price_never_falls_as_size_duration_or_utilisation_grow(
    policy: PricingPolicy, request_: QuoteInput, size: int, duration: int, u1: int, u2: int
) -> None:
    small, big = sorted((request_.size_bytes, size))
    assert _total(policy, request_, size_bytes=small) <= _total(policy, request_, size_bytes=big)
    short, long = sorted((request_.duration_seconds, duration))
    assert _total(policy, request_, duration_seconds=short) <= _total(
        policy, request_, duration_seconds=long
    )
    low, high = sorted((u1, u2))
    assert _total(policy, request_, utilisation_bp=low) <= _total(
        policy, request_, utilisation_bp=high
    )


@given(policies(), requests(), bps, bps, st.integers(1, 1_000), st.integers(1, 1_000))
def test_price_never_falls_as_quality_or_tier_grow(
    policy: PricingPolicy, request_: QuoteInput, q1: int, q2: int, t1: int, t2: int
) -> None:
    low, high = sorted((q1, q2))
    assert _total(policy, request_, quality_bp=None) <= _total(policy, request_, quality_bp=low)
    assert _total(policy, request_, quality_bp=low) <= _total(policy, request_, quality_bp=high)
    cheap, dear = sorted((t1, t2))
    assert _total(policy, request_, tier_percent=cheap) <= _total(
        policy, request_, tier_percent=dear
    )


@given(bps, bps)
def test_default_multiplier_is_monotone_and_between_0_8_and_2(u1: int, u2: int) -> None:
    low, high = sorted((u1, u2))
    assert Fraction(4, 5) <= POLICY.multiplier(low) <= POLICY.multiplier(high) <= 2


@given(curves(), bps, bps)
def test_any_valid_curve_is_monotone_and_bounded_by_its_ends(
    curve: tuple[tuple[int, int], ...], u1: int, u2: int
) -> None:
    policy = PricingPolicy(utilisation_curve=curve)
    low, high = sorted((u1, u2))
    floor, ceiling = Fraction(curve[0][1], 10_000), Fraction(curve[-1][1], 10_000)
    assert floor <= policy.multiplier(low) <= policy.multiplier(high) <= ceiling
    for x, y in curve:  # and it passes through its knots exactly
        assert policy.multiplier(x) == Fraction(y, 10_000)


@given(bps)
def test_bonus_is_zero_below_the_threshold_and_at_most_the_maximum(quality: int) -> None:
    bonus = POLICY.bonus(quality)
    assert 0 <= bonus <= Fraction(15, 100)
    if quality <= 9_000:
        assert bonus == 0


# --- bad input ----------------------------------------------------------------

GOOD_REQUEST: dict[str, Any] = {
    "size_bytes": GB,
    "duration_seconds": DAY,
    "tier_percent": 100,
    "sla_requested": False,
    "utilisation_bp": 5_000,
    "quality_bp": None,
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size_bytes", 0),
        ("size_bytes", -1),
        ("size_bytes", 10**18 + 1),
        ("size_bytes", 1.5),
        ("size_bytes", True),
        ("duration_seconds", 0),
        ("duration_seconds", -DAY),
        ("duration_seconds", MAX_DURATION_SECONDS + 1),
        ("tier_percent", 0),
        ("tier_percent", -100),
        ("tier_percent", 1_001),
        ("tier_percent", "100"),
        ("sla_requested", 1),
        ("sla_requested", "yes"),
        ("utilisation_bp", -1),
        ("utilisation_bp", 10_001),
        ("quality_bp", -1),
        ("quality_bp", 10_001),
        ("quality_bp", 0.99),
    ],
)
def test_a_bad_request_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        QuoteInput(**{**GOOD_REQUEST, field: value})


def test_multiplier_refuses_utilisation_out_of_range() -> None:
    with pytest.raises(PricingError, match="utilisation_bp"):
        POLICY.multiplier(10_001)


def test_policy_from_an_empty_table_is_the_seed() -> None:
    assert PricingPolicy.from_mapping({}) == POLICY
    assert POLICY.utilisation_curve == DEFAULT_UTILISATION_CURVE


def test_policy_from_a_table_overrides_what_it_names() -> None:
    policy = PricingPolicy.from_mapping(
        {
            "base_price_micro_per_gb_day": 50 * TOKEN,
            "network_fee_bp": 300,
            "utilisation_curve": [[0, 10_000], [10_000, 15_000]],
        }
    )
    assert policy.base_price_micro_per_gb_day == 50 * TOKEN
    assert policy.network_fee_bp == 300
    assert policy.escrow_fee_bp == 200
    assert policy.utilisation_curve == ((0, 10_000), (10_000, 15_000))
    assert policy.multiplier(5_000) == Fraction(5, 4)


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"base_price": 1, "colour": 2}, "unknown setting base_price, colour"),
        ({"base_price_micro_per_gb_day": -1}, "base_price_micro_per_gb_day must be in"),
        ({"base_price_micro_per_gb_day": 100.0}, "base_price_micro_per_gb_day must be an integer"),
        ({"sla_premium_bp": True}, "sla_premium_bp must be an integer"),
        ({"sla_premium_bp": 10_001}, "sla_premium_bp must be in"),
        ({"network_fee_bp": -5}, "network_fee_bp must be in"),
        ({"escrow_fee_bp": "2%"}, "escrow_fee_bp must be an integer"),
        ({"bonus_max_bp": 20_000}, "bonus_max_bp must be in"),
        ({"bonus_threshold_bp": 10_000}, "bonus_threshold_bp must be in"),
        ({"utilisation_curve": 3}, "utilisation_curve must be an array"),
        ({"utilisation_curve": [[0, 8_000]]}, "utilisation_curve needs at least two"),
        ({"utilisation_curve": [[0, 1], 5]}, r"utilisation_curve\[1\] must be a"),
        ({"utilisation_curve": [[0, 1], [10_000]]}, r"utilisation_curve\[1\] must be a"),
        ({"utilisation_curve": [[1, 1], [10_000, 2]]}, "must start at 0 bp"),
        ({"utilisation_curve": [[0, 1], [9_000, 2]]}, "end at 10,000 bp"),
        (
            {"utilisation_curve": [[0, 1], [5_000, 2], [5_000, 3], [10_000, 4]]},
            r"utilisation_curve\[2\] utilisation_bp must be above",
        ),
        (
            {"utilisation_curve": [[0, 9_000], [10_000, 8_000]]},
            r"utilisation_curve\[1\] multiplier_bp must not fall",
        ),
        ({"utilisation_curve": [[0, 0], [10_000, 8_000]]}, r"\[0\] multiplier_bp must be in"),
        ({"utilisation_curve": [[0, 1], [10_000, 100_001]]}, r"\[1\] multiplier_bp must be in"),
        ({"utilisation_curve": [[0, 1.5], [10_000, 2]]}, r"\[0\] multiplier_bp must be an int"),
    ],
)
def test_a_bad_pricing_table_names_the_setting(table: dict[str, Any], fragment: str) -> None:
    with pytest.raises(PricingError, match=fragment):
        PricingPolicy.from_mapping(table)


def test_from_mapping_refuses_a_non_table() -> None:
    with pytest.raises(PricingError, match=r"market\.pricing must be a table"):
        PricingPolicy.from_mapping(5)  # type: ignore[arg-type]
