"""The node as a bench's own code talks to it: the wallet's JSON-RPC Transport, as any client would
use it, with an error answer to any call of a batch raised (a bench's setup must not go on with a
transaction the node refused)."""

from __future__ import annotations

from typing import Any

from wallet.chain.transport import Transport

# Seconds to connect and to a single call's answer; a batch gets the Transport's half a second per
# call on top, so mining a block of queued transactions or tracing a chunk is not cut off.
NODE_TIMEOUT = 60.0

Calls = list[tuple[str, list[Any]]]


def open_node(url: str, max_batch: int, timeout: float = NODE_TIMEOUT) -> Transport:
    """A Transport that sends up to `max_batch` calls per request: a bench sizes its batches itself,
    and a batch the Transport split would be another measurement. One per thread (one HTTP session)."""
    return Transport(url, timeout=timeout, max_batch=max_batch)


def batch_results(node: Transport, calls: Calls) -> list[Any]:
    """Every call's result, in order.

    Raises:
        RuntimeError: the node answered any of the calls with an error.
    """
    answers = node.batch(calls)
    errors = [answer["error"] for answer in answers if "error" in answer]
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(calls)} calls failed, first: {str(errors[0])[:200]}")
    return [answer["result"] for answer in answers]
