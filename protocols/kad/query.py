"""Drives a pure :class:`Lookup` over the network with alpha requests in flight.

The state machine decides whom to ask and when the lookup is done; this
driver only turns its decisions into concurrent requests and feeds back the
answers (or failures) with the current time.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable

import trio

from protocols.framing import PEER_FAILURES
from protocols.kad.lookup import Lookup
from protocols.kad.routing_table import Contact

# Asks one peer for the peers it knows closer to the target (and may record
# anything else its reply carried, such as a value or providers).
Ask = Callable[[Contact], Awaitable[Iterable[Contact]]]
# Called with a peer that answered validly, so the node can add it to its table.
OnValid = Callable[[Contact], None]


async def run_lookup(
    lookup: Lookup,
    ask: Ask,
    *,
    on_valid: OnValid | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Lookup:
    """Run ``lookup`` to completion (or until ``should_stop()``); returns it."""
    send, receive = trio.open_memory_channel[tuple[Contact, list[Contact] | None]](math.inf)

    async def one(contact: Contact) -> None:
        try:
            closer: list[Contact] | None = list(await ask(contact))
        except PEER_FAILURES:
            closer = None
        send.send_nowait((contact, closer))

    async with trio.open_nursery() as nursery:
        while True:
            for contact in lookup.next_requests(trio.current_time()):
                nursery.start_soon(one, contact)
            if lookup.finished or (should_stop is not None and should_stop()):
                break
            deadline = lookup.next_deadline()
            if deadline is None:
                break
            with trio.move_on_at(deadline):
                contact, closer = await receive.receive()
                now = trio.current_time()
                if closer is None:
                    lookup.on_failure(contact.peer_id, now)
                else:
                    lookup.on_success(contact.peer_id, closer, now)
                    if on_valid is not None:
                        on_valid(contact)
        nursery.cancel_scope.cancel()
    return lookup
