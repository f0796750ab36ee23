"""Compiled contract artifacts that ship with the package, so the runtime needs no compiler.

Each `<Name>.json` next to this file holds `contractName`, `abi`, `bytecode` (0x-prefixed
creation code), `deployedBytecode` and `compiler` (the solc version). They are built from
`contracts/*.sol` by `node scripts/compile_contracts.mjs`; `--check` tells whether they are current.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent

ARTIFACTS: tuple[str, ...] = tuple(sorted(p.stem for p in _HERE.glob("*.json")))


class UnknownArtifactError(KeyError):
    """No compiled artifact with that contract name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@cache
def _read(name: str) -> str:
    return (_HERE / f"{name}.json").read_text(encoding="utf-8")


def load_artifact(name: str) -> dict[str, Any]:
    """The artifact of contract `name` (e.g. "SampleToken"); a fresh dict on every call."""
    if name not in ARTIFACTS:
        known = ", ".join(ARTIFACTS) or "none"
        raise UnknownArtifactError(f"unknown contract artifact {name!r}; available: {known}")
    return json.loads(_read(name))


__all__ = ["ARTIFACTS", "UnknownArtifactError", "load_artifact"]
