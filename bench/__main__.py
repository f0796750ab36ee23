"""`python -m bench [name ...]`: run the benchmarks (all by default)."""

from __future__ import annotations

import signal
import sys

from bench import accounts, blocks, custody, sends

BENCHES = {"accounts": accounts.main, "blocks": blocks.main, "custody": custody.main, "sends": sends.main}


def main() -> None:
    # SIGTERM (timeout, kill) must run the benches' cleanup too: a stack left behind keeps its
    # node busy (an Anvil finishing abandoned traces ate a core for half an hour) and skews
    # every later measurement.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    names = sys.argv[1:] or list(BENCHES)
    for name in names:
        BENCHES[name]()


if __name__ == "__main__":
    main()
