"""Segment size and in-flight policy for puts and gets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.content.segment import MAX_SEGMENTS
from node.files.sizing import (
    BULK_SEGMENT_MAX,
    IN_FLIGHT_BUDGET,
    choose_segment_size,
    segments_in_flight,
)

MIB = 1 << 20


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (None, MIB),  # a pipe: size unknown
        (0, MIB),
        (16 * MIB, MIB),  # small files keep the default
        (20_000_000, 2 * MIB),
        (64 * MIB, 4 * MIB),
        (1 << 30, 8 * MIB),  # capped for bulk
        (100 << 30, 32 * MIB),  # the manifest's segment cap takes over
    ],
)
def test_segment_size_grows_with_the_file(size: int | None, expected: int) -> None:
    assert choose_segment_size(size, MIB) == expected


def test_a_large_configured_default_is_kept() -> None:
    assert choose_segment_size(64 * MIB, 16 * MIB) == 16 * MIB


@given(st.integers(0, 1 << 40))
def test_segment_size_is_a_power_of_two_multiple_within_bounds(size: int) -> None:
    chosen = choose_segment_size(size, MIB)
    assert chosen >= MIB and chosen & (chosen - 1) == 0
    assert -(-size // chosen) <= max(MAX_SEGMENTS, -(-size // (64 * MIB)))
    if size <= 16 * BULK_SEGMENT_MAX:
        assert chosen <= BULK_SEGMENT_MAX


@pytest.mark.parametrize(
    ("segment", "expected"), [(MIB, 4), (4 * MIB, 4), (8 * MIB, 3), (64 * MIB, 2)]
)
def test_in_flight_segments_fit_the_budget(segment: int, expected: int) -> None:
    assert segments_in_flight(4, segment) == expected
    assert expected * segment <= max(IN_FLIGHT_BUDGET, 2 * segment)


def test_wide_codes_list_fewer_segments_so_their_manifest_fits() -> None:
    from node.files.sizing import max_segments

    assert max_segments(6) == MAX_SEGMENTS
    assert max_segments(14) < max_segments(9) < MAX_SEGMENTS
    # A 100 GiB archive (10+4) file gets segments large enough to fit.
    size = choose_segment_size(100 << 30, MIB, 14)
    assert -(-(100 << 30) // size) <= max_segments(14)
