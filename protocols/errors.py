"""Who is at fault when a protocol exchange fails.

A :class:`RemoteProtocolError` is the peer's fault: its stream is reset, the
failure is counted under ``reason``, and nothing else changes. A
:class:`LocalProtocolError` is ours (we were asked to send something the
protocol does not allow); it propagates like any other bug.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of both error kinds; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed, oversized, unknown or invalid."""


class LocalProtocolError(ProtocolError):
    """We tried to send something the protocol forbids."""
