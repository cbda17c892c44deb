"""The one error the content stages raise for bad content.

Shards, frames and ciphertexts come from peers and manifests from the DHT, so
a `ContentError` is the expected outcome of hostile or damaged input, not a
bug: the message names the segment and shard at fault (never a key), and the
stage that raised it has changed no state.
"""

from __future__ import annotations

__all__ = ["ContentError"]


class ContentError(Exception):
    """Content that is corrupt, tampered with, or inconsistent with its manifest."""
