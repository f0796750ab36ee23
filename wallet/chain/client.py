"""Reading the chain. Raw JSON-RPC for hot paths; web3 where its formatting cost does not matter."""

from __future__ import annotations

from web3 import HTTPProvider, Web3

from wallet.errors import ChainUnavailable


def fetch_chain_id(rpc_url: str, timeout: float = 5.0) -> int:
    """The node's chain id (eth_chainId).

    Raises:
        ChainUnavailable: the node did not answer, or answered something that is not a chain id.
    """
    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
    try:
        chain_id = w3.eth.chain_id
    except Exception as exc:  # noqa: BLE001 - any transport or decode failure means the same to us
        raise ChainUnavailable(f"node at {rpc_url} did not give its chain id: {type(exc).__name__}") from None
    if not isinstance(chain_id, int) or chain_id <= 0:
        raise ChainUnavailable(f"node at {rpc_url} answered an invalid chain id")
    return chain_id
