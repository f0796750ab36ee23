"""The authorization domain without a stack: canonical encoding and signatures, seals, the policy."""

from __future__ import annotations

import pytest
from eth_account import Account

from wallet.authz import canonical
from wallet.authz.client import send_request_of, sign_request
from wallet.authz.policy import AddressBookEntry, AssetLimits, Movement, Policy, evaluate
from wallet.authz.sealed import Sealer, derive_seal_key

# Pure: no service.
pytestmark = pytest.mark.fast

KEY = Account.create()
TO = "0x00000000000000000000000000000000DeaDBeef"


def _asks(command: dict, auth: dict) -> canonical.Asks:
    return canonical.asks_for_send(31337, send_request_of(command), auth["expires_at"], auth["key_id"])


def test_a_signed_request_verifies_and_any_change_breaks_it() -> None:
    command = {"type": "send_transaction", "to": TO, "amount": "1500", "request_id": "r-1", "meta": {"m": 1}}
    auth = sign_request(KEY.key, command, chain_id=31337)["auth"]
    assert canonical.recover(_asks(command, auth), auth["signature"]) == KEY.address
    for change in ({"amount": "1501"}, {"request_id": "r-2"}, {"asset": "0x" + "11" * 20}, {"to": "0x" + "22" * 20},
                   {"from_address": "0x" + "33" * 20}):
        assert canonical.recover(_asks({**command, **change}, auth), auth["signature"]) != KEY.address
    # meta is not signed; another chain is another request
    assert canonical.recover(_asks({**command, "meta": {}}, auth), auth["signature"]) == KEY.address
    other_chain = canonical.asks_for_send(1, send_request_of(command), auth["expires_at"], auth["key_id"])
    assert canonical.recover(other_chain, auth["signature"]) != KEY.address


def test_the_high_s_twin_of_a_signature_is_refused() -> None:
    command = {"type": "send_transaction", "to": TO, "amount": 5, "request_id": "r-3"}
    auth = sign_request(KEY.key, command, chain_id=31337)["auth"]
    raw = bytes.fromhex(auth["signature"][2:])
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    twin = raw[:32] + (n - int.from_bytes(raw[32:64], "big")).to_bytes(32, "big") + bytes([raw[64] ^ 1])
    assert canonical.recover(_asks(command, auth), "0x" + twin.hex()) is None


def test_a_contract_call_is_signed_over_its_call_data() -> None:
    from wallet.contracts import load_artifact

    abi = load_artifact("SampleToken")["abi"]
    command = {"type": "transact_contract", "contract": TO, "abi": abi, "function": "transfer",
               "args": [TO, 5], "request_id": "t-1"}
    auth = sign_request(KEY.key, command, chain_id=31337)["auth"]
    assert canonical.recover(_asks(command, auth), auth["signature"]) == KEY.address
    assert canonical.recover(_asks({**command, "args": [TO, 6]}, auth), auth["signature"]) != KEY.address


def test_a_seal_binds_its_record_and_its_content() -> None:
    sealer = Sealer(derive_seal_key(b"\x01" * 32))
    sealed = sealer.seal("decision:a", b'{"x":1}')
    assert sealer.open("decision:a", sealed) == b'{"x":1}'
    for context, value in (("decision:b", sealed), ("decision:a", sealed.replace(b"1}", b"2}"))):
        try:
            sealer.open(context, value)
        except Exception as exc:  # noqa: BLE001
            assert getattr(exc, "code", None) == "request_tampered"
        else:
            raise AssertionError("a forged seal verified")
    assert Sealer(derive_seal_key(b"\x02" * 32)).tag("c", b"v") != sealer.tag("c", b"v")


def test_policy_rules_in_order() -> None:
    policy = Policy(assets={"ETH": AssetLimits(max_per_tx=100, daily=250, daily_per_destination=150, hold_above=80)})
    m = Movement("ETH", 50, "0xa")
    assert evaluate(policy, "withdrawal", [m], {}, 0).outcome == "allowed"
    assert evaluate(policy, "withdrawal", [Movement("ETH", 101, "0xa")], {}, 0).code == "policy_max_per_tx"
    assert evaluate(policy, "withdrawal", [m], {"out:ETH": 201}, 0).code == "policy_daily_limit"
    assert evaluate(policy, "withdrawal", [m], {"out:ETH:0xa": 101}, 0).code == "policy_destination_limit"
    assert evaluate(policy, "withdrawal", [Movement("ETH", 90, "0xa")], {}, 0).outcome == "held"
    frozen = policy.model_copy(update={"frozen": True})
    assert evaluate(frozen, "withdrawal", [m], {}, 0).code == "wallet_frozen"
    listed = policy.model_copy(update={"allowlist": True, "allowlist_delay_seconds": 10,
                                       "address_book": {"0xa": AddressBookEntry(added_at=100)}})
    assert evaluate(listed, "withdrawal", [m], {}, 105).code == "destination_not_yet_allowed"
    assert evaluate(listed, "withdrawal", [m], {}, 111).outcome == "allowed"
    assert evaluate(listed, "withdrawal", [Movement("ETH", 5, "0xb")], {}, 111).code == "destination_not_allowed"
    # Sweeps: never held, limited by their own budget.
    sweeps = Policy(assets={"ETH": AssetLimits(hold_above=1, sweep_daily=1000)})
    assert evaluate(sweeps, "sweep", [Movement("ETH", 900, "0xc")], {}, 0).outcome == "allowed"
    assert evaluate(sweeps, "sweep", [Movement("ETH", 900, "0xc")], {"sweep:ETH": 200}, 0).code == \
        "policy_daily_limit"


# ---- the rolling ledger: bounded, never under-counting
def test_the_rolling_ledger_counts_every_slot_touching_the_window_and_drops_the_rest() -> None:
    from wallet.authz import ledger

    now = 1_800_000_000.0
    inside = ledger.slot_of(now - ledger.WINDOW_SECONDS + 1)  # starts before the window, ends inside it
    outside = inside - ledger.SLOT_SECONDS  # ends exactly where the window begins
    current = ledger.slot_of(now)
    big = 10**30  # token amounts exceed 64-bit integers
    fields = {str(inside).encode(): str(big).encode(), str(outside).encode(): b"5",
              str(current).encode(): b"7", b"req-legacy": f"{now - 60:.3f}:11".encode()}
    held, stale = ledger.total(fields, now)
    assert held == big + 7 + 11
    assert stale == [str(outside).encode()]
    assert len({ledger.slot_of(now - s) for s in range(0, 86400, 60)}) <= ledger.SLOTS_PER_WINDOW + 1
