"""Every setting a process reads is in the README's configuration table."""

from __future__ import annotations

from pathlib import Path

from wallet.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def documented(variable: str, rows: list[str]) -> bool:
    # A row may name a sibling by its suffix: "`WALLET_KAFKA_SASL_USERNAME` / `_PASSWORD`".
    stem, _, suffix = variable.rpartition("_")
    return any(f"`{variable}`" in row or (f"`{stem}_" in row and f"`_{suffix}`" in row) for row in rows)


def test_every_setting_is_documented() -> None:
    text = README.read_text()
    rows = [line for line in text[text.index("## Configuration"):].splitlines() if line.startswith("| `WALLET_")]
    missing = [v for v in (f"WALLET_{name.upper()}" for name in Settings.model_fields) if not documented(v, rows)]
    assert missing == []
