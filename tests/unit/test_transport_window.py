"""ReceiveWindow: credit accounting and go-yamux's half-window update rule."""

from __future__ import annotations

from protocols.transport.window import INITIAL_WINDOW, ReceiveWindow

RTT = 0.001


def test_the_peer_starts_with_the_spec_window_and_cannot_exceed_it() -> None:
    window = ReceiveWindow(now=0.0)
    assert window.credit == INITIAL_WINDOW
    assert window.consume(INITIAL_WINDOW - 10)
    assert not window.consume(11)
    assert window.consume(10)
    assert window.credit == 0


def test_no_update_until_half_the_window_is_free() -> None:
    window = ReceiveWindow(now=0.0)
    window.consume(INITIAL_WINDOW // 2 - 1)
    assert window.grant(buffered=0, now=10.0, rtt=RTT) == 0
    window.consume(1)
    assert window.grant(buffered=0, now=10.0, rtt=RTT) == INITIAL_WINDOW // 2
    assert window.credit == INITIAL_WINDOW


def test_unread_bytes_still_occupy_the_window() -> None:
    window = ReceiveWindow(now=0.0)
    window.consume(INITIAL_WINDOW)
    # All of it arrived, but only a quarter was read: no update yet.
    assert window.grant(buffered=INITIAL_WINDOW * 3 // 4, now=10.0, rtt=RTT) == 0
    assert window.grant(buffered=INITIAL_WINDOW // 2, now=10.0, rtt=RTT) == INITIAL_WINDOW // 2
    assert window.credit + INITIAL_WINDOW // 2 == INITIAL_WINDOW


def test_window_doubles_while_updates_come_within_four_round_trips() -> None:
    window = ReceiveWindow(now=0.0, maximum=4 * INITIAL_WINDOW)
    granted = []
    now = 0.0
    for _ in range(4):
        window.consume(window.credit)
        now += RTT  # the reader keeps up: one update per round trip
        granted.append(window.grant(buffered=0, now=now, rtt=RTT))
    assert granted == [
        2 * INITIAL_WINDOW,
        4 * INITIAL_WINDOW,
        4 * INITIAL_WINDOW,
        4 * INITIAL_WINDOW,
    ]
    assert window.target == 4 * INITIAL_WINDOW  # never past the maximum


def test_window_stays_when_the_reader_is_slow() -> None:
    window = ReceiveWindow(now=0.0)
    window.consume(INITIAL_WINDOW)
    assert window.grant(buffered=0, now=1.0, rtt=RTT) == INITIAL_WINDOW
    assert window.target == INITIAL_WINDOW


def test_revoked_grant_is_credit_the_peer_does_not_have() -> None:
    window = ReceiveWindow(now=0.0)
    window.consume(INITIAL_WINDOW)
    increment = window.grant(buffered=0, now=1.0, rtt=RTT)
    window.revoke(increment)
    assert window.credit == 0
    assert window.grant(buffered=0, now=2.0, rtt=RTT) == increment
