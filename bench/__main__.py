"""`python -m bench [name ...]`: run the benchmarks (all by default)."""

from __future__ import annotations

import sys

from bench import accounts, blocks, custody, sends

BENCHES = {"accounts": accounts.main, "blocks": blocks.main, "custody": custody.main, "sends": sends.main}


def main() -> None:
    names = sys.argv[1:] or list(BENCHES)
    for name in names:
        BENCHES[name]()


if __name__ == "__main__":
    main()
