"""Loading the master key that wraps every private key at rest."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from wallet.errors import MasterKeyInvalid, MasterKeyMissing

MASTER_KEY_BYTES = 32


def load_master_key(value: SecretStr | None, path: Path | None) -> bytes:
    """The 32-byte master key from WALLET_MASTER_KEY (hex) or WALLET_MASTER_KEY_FILE.

    Raises:
        MasterKeyMissing: neither is set, or the file does not exist. We never make a new key
            silently: keys wrapped by a forgotten master key would be lost.
        MasterKeyInvalid: the value is not 64 hex characters.
    """
    if value is not None:
        text, source = value.get_secret_value(), "WALLET_MASTER_KEY"
    elif path is not None:
        if not path.is_file():
            raise MasterKeyMissing(f"WALLET_MASTER_KEY_FILE points at {path}, which does not exist")
        text, source = path.read_text(), f"WALLET_MASTER_KEY_FILE ({path})"
    else:
        raise MasterKeyMissing(
            "no master key: set WALLET_MASTER_KEY_FILE (or WALLET_MASTER_KEY) for the key-holding worker"
        )
    text = text.strip().removeprefix("0x")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        # Never echo the value: it may be a real key with a typo.
        raise MasterKeyInvalid(f"{source} is not hex") from None
    if len(key) != MASTER_KEY_BYTES:
        raise MasterKeyInvalid(f"{source} must be {MASTER_KEY_BYTES} bytes ({MASTER_KEY_BYTES * 2} hex chars)")
    return key
