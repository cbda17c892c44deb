"""Receive-window accounting for one Yamux stream, as go-yamux does it.

Yamux flow control is credit: each end may send a stream only as many bytes
as the other has granted, starting from the spec's 256 KiB and growing only
through WINDOW_UPDATE increments. Stock py-libp2p grants credit back after
every read (1,301 updates for 64 MiB); go-yamux waits until at least half the
window is free (15 updates), and doubles the window, up to a maximum, when
updates follow each other within four round trips (the reader is keeping
up, so a larger window is what limits the sender). Pure state: the caller
passes the time and the round-trip time, and sends the update itself.
"""

from __future__ import annotations

# The Yamux spec's initial window: both ends assume it without saying so, so
# it must never change; more credit is only ever granted with WINDOW_UPDATE.
INITIAL_WINDOW = 256 * 1024
# The most credit one stream may hold, and so the most a stream that stops
# being read can buffer. go-yamux allows 16 MiB; on loopback 1 and 4 MiB moved
# data as fast as 16 MiB (faster: the bytes stay in cache), and 4 MiB still
# covers ~300 Mbit/s at 100 ms round trip.
MAX_WINDOW = 4 * 1024 * 1024


class ReceiveWindow:
    """Credit the peer holds for one stream, and when to grant more."""

    __slots__ = ("_epoch_start", "credit", "maximum", "target")

    def __init__(self, now: float, *, maximum: int = MAX_WINDOW) -> None:
        self.target = INITIAL_WINDOW  # the window we mean to keep granted
        self.credit = INITIAL_WINDOW  # bytes the peer may still send
        self.maximum = max(maximum, INITIAL_WINDOW)
        self._epoch_start = now

    def consume(self, n: int) -> bool:
        """Account for ``n`` received bytes; False if they exceed the credit."""
        if n > self.credit:
            return False
        self.credit -= n
        return True

    def grant(self, buffered: int, now: float, rtt: float) -> int:
        """Credit to grant now (0 when not yet due); it is counted as granted.

        ``buffered`` is what arrived but was not read yet: it still occupies
        the window. An update is due once half the window is free again.
        """
        occupied = self.credit + buffered
        increment = self.target - occupied
        if increment < self.target // 2:
            return 0
        if rtt > 0 and now - self._epoch_start < 4 * rtt and self.target < self.maximum:
            self.target = min(self.target * 2, self.maximum)
            increment = self.target - occupied
        self._epoch_start = now
        self.credit += increment
        return increment

    def revoke(self, increment: int) -> None:
        """Take back a grant that never reached the peer."""
        self.credit -= increment
