"""Turn a task group's failure back into the one error a caller can act on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for inner in group.exceptions:
        if isinstance(inner, BaseExceptionGroup):
            yield from _leaves(inner)
        else:
            yield inner


@contextmanager
def first_of(*kinds: type[Exception]) -> Iterator[None]:
    """Re-raise the first error of ``kinds`` from an exception group, unwrapped.

    Segments are handled by concurrent tasks, so one failed segment surfaces
    as an exception group (with the siblings' cancellations). The caller wants
    "segment 7: only 3 of 6 shards ...", not the group. Anything else in the
    group (a bug) propagates unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        # A bug next to the expected failure must not be hidden by it.
        if any(not isinstance(leaf, (*kinds, trio.Cancelled)) for leaf in leaves):
            raise
        for leaf in leaves:
            if isinstance(leaf, kinds):
                raise leaf from None
        raise
