"""The rolling 24 h limits ledger: what each ledger (e.g. `out:ETH`, `out:ETH:<destination>`) has
reserved, summed per time slot.

A ledger is a Redis hash of slot start -> amount reserved in that slot, so reading it costs at most
`SLOTS_PER_WINDOW + 1` fields however many requests a day brings (one field per request made the
decision write O(requests per day)). A slot counts in full while any part of it lies inside the
window: the sum can only over-count by up to one slot's age, never under-count, so a limit is
never exceeded; a request may be refused at most `SLOT_SECONDS` earlier than an exact window would.

Pure: the gate reads the hashes and writes the changes in its own transaction.
"""

from __future__ import annotations

from wallet.authz.policy import WINDOW_SECONDS

SLOT_SECONDS = 300
SLOTS_PER_WINDOW = WINDOW_SECONDS // SLOT_SECONDS
# A ledger untouched for two windows holds nothing that counts.
LEDGER_TTL_SECONDS = 2 * WINDOW_SECONDS


def slot_of(at: float) -> int:
    """The start (epoch seconds) of the slot `at` falls in."""
    return int(at // SLOT_SECONDS) * SLOT_SECONDS


def counts(slot: int, now: float) -> bool:
    """Whether the slot starting at `slot` still overlaps the window ending at `now`."""
    return slot + SLOT_SECONDS > now - WINDOW_SECONDS


def total(fields: dict[bytes, bytes], now: float) -> tuple[int, list[bytes]]:
    """(what the ledger holds inside the window, the fields of slots that fell out of it)."""
    held, stale = 0, []
    for field, value in fields.items():
        if field.isdigit():
            at, amount = int(field), value
        else:  # written before slots: request id -> "<epoch>:<amount>"
            when, _, amount = value.partition(b":")
            at = slot_of(float(when))
        if counts(at, now):
            held += int(amount)
        else:
            stale.append(field)
    return held, stale
