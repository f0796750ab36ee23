"""Token symbol and decimals, asked once per token and remembered."""

from __future__ import annotations

import redis
from eth_abi import decode
from eth_utils import function_signature_to_4byte_selector

from wallet.chain.rpc import RpcClient
from wallet.deposits.model import TokenInfo
from wallet.state.keyspace import Keyspace

# The optional ERC-20 metadata calls, asked through the same JSON-RPC client as everything else.
_METADATA = {
    "symbol": ("0x" + function_signature_to_4byte_selector("symbol()").hex(), "string"),
    "decimals": ("0x" + function_signature_to_4byte_selector("decimals()").hex(), "uint8"),
}


class TokenDirectory:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, rpc: RpcClient) -> None:
        self._redis = client
        self._ks = keyspace
        self._rpc = rpc

    def info(self, token: str) -> TokenInfo:
        cached = self._redis.hgetall(self._ks.token(token))
        if cached:
            symbol = cached.get(b"symbol", b"").decode() or None
            decimals = cached.get(b"decimals", b"").decode()
            return TokenInfo(symbol, int(decimals) if decimals else None)
        symbol, decimals = self._ask(token)
        info = TokenInfo(symbol, decimals)
        # Empty strings stand for "the token did not answer": remembered too, not asked every block.
        self._redis.hset(self._ks.token(token), mapping={
            "symbol": info.symbol or "", "decimals": "" if info.decimals is None else str(info.decimals)})
        return info

    def _ask(self, token: str) -> tuple[str | None, int | None]:
        # Transport failures propagate (the block task retries); a token that reverts or answers
        # garbage simply has no metadata: not every token implements it.
        items = self._rpc.batch([("eth_call", [{"to": token, "data": selector}, "latest"])
                                 for selector, _ in _METADATA.values()])
        answers = {}
        for (name, (_, abi_type)), item in zip(_METADATA.items(), items, strict=True):
            try:
                [answers[name]] = decode([abi_type], bytes.fromhex(str(item["result"])[2:]))
            except Exception:  # noqa: BLE001 - any malformed or missing answer means "no metadata"
                answers[name] = None
        symbol, decimals = answers["symbol"], answers["decimals"]
        symbol = symbol[:32] if isinstance(symbol, str) and symbol.isprintable() and symbol else None
        decimals = decimals if isinstance(decimals, int) and 0 <= decimals <= 77 else None
        return symbol, decimals
