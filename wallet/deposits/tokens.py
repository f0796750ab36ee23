"""Token symbol and decimals, asked once per token and remembered."""

from __future__ import annotations

import redis
from web3 import HTTPProvider, Web3

from wallet.deposits.model import TokenInfo
from wallet.state.keyspace import Keyspace

_ERC20_METADATA_ABI = [
    {"name": "symbol", "type": "function", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "string"}]},
    {"name": "decimals", "type": "function", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "uint8"}]},
]


class TokenDirectory:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, rpc_url: str) -> None:
        self._redis = client
        self._ks = keyspace
        self._w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": 10}))

    def info(self, token: str) -> TokenInfo:
        cached = self._redis.hgetall(self._ks.token(token))
        if cached:
            symbol = cached.get(b"symbol", b"").decode() or None
            decimals = cached.get(b"decimals", b"").decode()
            return TokenInfo(symbol, int(decimals) if decimals else None)
        info = TokenInfo(self._ask(token, "symbol"), self._ask(token, "decimals"))
        # Empty strings stand for "the token did not answer": remembered too, not asked every block.
        self._redis.hset(self._ks.token(token), mapping={
            "symbol": info.symbol or "", "decimals": "" if info.decimals is None else str(info.decimals)})
        return info

    def _ask(self, token: str, function: str):
        contract = self._w3.eth.contract(address=Web3.to_checksum_address(token), abi=_ERC20_METADATA_ABI)
        try:
            value = getattr(contract.functions, function)().call()
        except Exception:  # noqa: BLE001 - not every token implements the optional metadata
            return None
        if function == "symbol":
            return value[:32] if isinstance(value, str) and value.isprintable() else None
        return value if isinstance(value, int) and 0 <= value <= 77 else None
