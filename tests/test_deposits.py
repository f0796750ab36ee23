"""Deposits through the running system: beat -> schedule_blocks -> process_block -> Kafka `transaction`."""

from __future__ import annotations

import pytest
from web3 import Web3

from tests.chain_helpers import Chain
from tests.kafka_probe import KafkaProbe
from wallet.state.blocks import BlockLedger
from wallet.state.keyspace import Keyspace

K = 2  # WALLET_REQUIRED_CONFIRMATIONS in tests/conftest.py




def deposit_events(kafka: KafkaProbe, to: str, event_type: str, count: int = 1, timeout: float = 30):
    return kafka.events(
        "transaction", lambda e: e["type"] == event_type and e["payload"]["to"] == to, count, timeout
    )


def test_eth_deposit_is_seen_then_confirmed(chain: Chain, kafka: KafkaProbe, new_address) -> None:
    to = new_address()
    receipt = chain.send_eth(to, 1_500_000_000_000_000_000)

    [seen] = deposit_events(kafka, to, "deposit.seen")
    p = seen["payload"]
    assert p["kind"] == "eth" and p["asset"] == "ETH"
    assert p["tx_hash"] == receipt["transactionHash"].to_0x_hex()
    assert p["block_number"] == receipt["blockNumber"]
    assert p["block_hash"] == receipt["blockHash"].to_0x_hex()
    assert p["from"] == chain.funder.address.lower() and p["to"] == to
    assert p["amount"] == "1500000000000000000" and p["amount_display"] == "1.5"
    assert p["token_decimals"] == 18 and p["required_confirmations"] == K

    chain.mine(K)
    [confirmed] = deposit_events(kafka, to, "deposit.confirmed")
    assert confirmed["payload"]["deposit_id"] == p["deposit_id"]
    assert confirmed["payload"]["confirmations"] >= K


def test_erc20_deposit_carries_token_and_amounts(chain: Chain, kafka: KafkaProbe, new_address) -> None:
    token = chain.deploy("SampleToken", "Test USD", "TUSD", 6, 10**15)
    to = new_address()
    receipt = chain.transact(token.functions.transfer(Web3.to_checksum_address(to), 2_500_000))
    assert receipt["status"] == 1

    [seen] = deposit_events(kafka, to, "deposit.seen")
    p = seen["payload"]
    assert p["kind"] == "erc20" and p["asset"] == token.address.lower()
    assert p["token_symbol"] == "TUSD" and p["token_decimals"] == 6
    assert p["amount"] == "2500000" and p["amount_display"] == "2.5"
    assert p["log_index"] == receipt["logs"][0]["logIndex"]
    chain.mine(K)
    assert deposit_events(kafka, to, "deposit.confirmed")


def test_internal_transfer_is_a_deposit(chain: Chain, kafka: KafkaProbe, new_address) -> None:
    forwarder = chain.deploy("EtherForwarder")
    to = new_address()
    receipt = chain.transact(forwarder.functions.forward(Web3.to_checksum_address(to)), value=7 * 10**16)
    assert receipt["status"] == 1

    [seen] = deposit_events(kafka, to, "deposit.seen")
    assert seen["payload"]["kind"] == "internal"
    assert seen["payload"]["from"] == forwarder.address.lower()
    assert seen["payload"]["amount"] == str(7 * 10**16)
    assert seen["payload"]["trace_path"] == "0"


def test_failed_transactions_and_contract_creations_are_not_deposits(
    chain: Chain, kafka: KafkaProbe, new_address
) -> None:
    reverter = chain.deploy("Reverter")  # a contract creation: to = null
    to = new_address()
    forwarder = chain.deploy("EtherForwarder")
    # A call that reverts after trying to pay our address: nothing moved.
    failed = chain.transact(forwarder.functions.forward(Web3.to_checksum_address(reverter.address)),
                            value=10**16)
    assert failed["status"] == 0
    # Then a real deposit: the scanner went past the odd blocks and reports only this one.
    chain.send_eth(to, 12345)
    events = deposit_events(kafka, to, "deposit.seen", count=2, timeout=10)
    assert [e["payload"]["amount"] for e in events] == ["12345"]


@pytest.mark.parametrize("extra_blocks", [0, K])
def test_reorg_retracts_orphaned_deposits_and_finds_the_moved_one(
    extra_blocks: int, chain: Chain, kafka: KafkaProbe, new_address
) -> None:
    """Orphans 2 + extra_blocks blocks (each deposit is mined in its own block): depths 2..K+2."""
    moved, vanished = new_address(), new_address()
    snapshot = chain.snapshot()
    moved_raw = chain.sign({"to": Web3.to_checksum_address(moved), "value": 1000})
    first = chain.send_raw(moved_raw)
    chain.send_eth(vanished, 2000)
    if extra_blocks:
        chain.mine(extra_blocks)
    [seen_moved] = deposit_events(kafka, moved, "deposit.seen")
    assert deposit_events(kafka, vanished, "deposit.seen")

    # The chain forgets those blocks; a new branch includes only one of the two, in another block.
    chain.revert(snapshot)
    chain.mine(1)
    second = chain.send_raw(moved_raw)
    assert second["blockHash"] != first["blockHash"]
    chain.mine(K + 1)

    [reverted] = deposit_events(kafka, vanished, "deposit.reverted")
    assert reverted["payload"]["block_hash"] != second["blockHash"].to_0x_hex()
    [moved_reverted] = deposit_events(kafka, moved, "deposit.reverted")
    assert moved_reverted["payload"]["block_hash"] == seen_moved["payload"]["block_hash"]
    seen_again = deposit_events(kafka, moved, "deposit.seen", count=2)
    assert seen_again[-1]["payload"]["block_hash"] == second["blockHash"].to_0x_hex()
    assert_confirmed_once_on_the_new_branch(kafka, moved, vanished, second["blockHash"].to_0x_hex())


def assert_confirmed_once_on_the_new_branch(kafka: KafkaProbe, moved: str, vanished: str, new_hash: str) -> None:
    """The moved deposit is confirmed exactly once in its new block. A confirmation on the orphaned
    branch may have gone out before the reorg (it was K deep then: right at the time), and then
    its retraction says `was_confirmed`; the vanished deposit has no confirmation left standing."""
    kafka.events("transaction", lambda e: e["type"] == "deposit.confirmed" and e["payload"]["to"] == moved
                 and e["payload"]["block_hash"] == new_hash, timeout=60)
    events = kafka.so_far("transaction")

    def of(to: str, event_type: str) -> list[dict]:
        return [e for e in events if e["type"] == event_type and e["payload"].get("to") == to]

    assert [e["payload"]["block_hash"] for e in of(moved, "deposit.confirmed")
            if e["payload"]["block_hash"] == new_hash] == [new_hash]
    for to in (moved, vanished):
        for early in (e for e in of(to, "deposit.confirmed") if e["payload"]["block_hash"] != new_hash):
            assert any(r["payload"]["deposit_id"] == early["payload"]["deposit_id"]
                       and r["payload"]["block_hash"] == early["payload"]["block_hash"]
                       and r["meta"].get("was_confirmed") is True for r in of(to, "deposit.reverted")), early
    assert all(e["payload"]["block_hash"] != new_hash for e in of(vanished, "deposit.confirmed"))


def test_a_moved_deposit_recorded_at_its_new_height_before_the_old_one_is_rescanned(
    chain: Chain, kafka: KafkaProbe, new_address, redis_client, celery_app
) -> None:
    """A reorg moves a transaction from height h to h + 1, and h + 1's new block is recorded before
    h is scanned again (a task fetching h + 1 just after the reorg, while the scheduler had not yet
    seen h change: a chaos run hit it). The deposit keeps its id (same transaction, same position
    kind), so its one record now tells of the new block: rescanning h must retract the old block's
    deposit, not the new one, which must still be confirmed."""
    from tasks.blocks import process_block

    moved, vanished = new_address(), new_address()
    snapshot = chain.snapshot()
    moved_raw = chain.sign({"to": Web3.to_checksum_address(moved), "value": 3000})
    first = chain.send_raw(moved_raw)
    chain.send_eth(vanished, 4000)
    [seen_moved] = deposit_events(kafka, moved, "deposit.seen")
    assert deposit_events(kafka, vanished, "deposit.seen")
    height = first["blockNumber"]

    # No scheduler tick meanwhile (it would see h changed and hand it out first): h + 1 goes first.
    scheduler = redis_client.lock(Keyspace("wtest").scheduler_lock, timeout=60, blocking_timeout=30)
    assert scheduler.acquire()
    try:
        chain.revert(snapshot)
        chain.mine(1)
        second = chain.send_raw(moved_raw)
        assert second["blockNumber"] == height + 1
        result = process_block.apply_async((height + 1,), ignore_result=False).get(timeout=30)
        # Retracted there: the vanished deposit (h + 1's old block) and the moved one's in h's old block.
        assert result["deposits"] == 1 and result["reverted"] == 2
    finally:
        scheduler.release()
    chain.mine(K + 1)

    [moved_reverted] = deposit_events(kafka, moved, "deposit.reverted")
    assert moved_reverted["payload"]["block_hash"] == seen_moved["payload"]["block_hash"]
    assert deposit_events(kafka, vanished, "deposit.reverted")
    assert_confirmed_once_on_the_new_branch(kafka, moved, vanished, second["blockHash"].to_0x_hex())


def test_a_deposit_moved_to_a_lower_height_is_not_retracted_by_its_old_height(
    chain: Chain, kafka: KafkaProbe, new_address
) -> None:
    """The other way round, in the scanner's own order: a reorg moves a transaction from h + 1 down
    to h. h is scanned first and finds it there; h + 1, scanned again later, must retract only its
    old block's deposit, not the moved one recorded at h since."""
    moved = new_address()
    snapshot = chain.snapshot()
    chain.mine(1)
    moved_raw = chain.sign({"to": Web3.to_checksum_address(moved), "value": 5000})
    first = chain.send_raw(moved_raw)
    [seen_moved] = deposit_events(kafka, moved, "deposit.seen")

    chain.revert(snapshot)
    second = chain.send_raw(moved_raw)
    assert second["blockNumber"] == first["blockNumber"] - 1
    chain.mine(K + 1)

    [moved_reverted] = deposit_events(kafka, moved, "deposit.reverted")
    assert moved_reverted["payload"]["block_hash"] == seen_moved["payload"]["block_hash"]
    new_hash = second["blockHash"].to_0x_hex()
    kafka.events("transaction", lambda e: e["type"] == "deposit.confirmed" and e["payload"]["to"] == moved
                 and e["payload"]["block_hash"] == new_hash, timeout=60)
    on_new = [e["type"] for e in kafka.so_far("transaction")
              if e["payload"].get("to") == moved and e["payload"]["block_hash"] == new_hash]
    assert on_new == ["deposit.seen", "deposit.confirmed"]


def test_a_confirmation_is_dropped_when_a_rescan_retracts_the_deposit_meanwhile(
    chain: Chain, kafka: KafkaProbe, new_address, redis_client, key_wiring
) -> None:
    """The confirming tick reads the due deposits, asks the node for their blocks, then writes: a
    rescan retracting one of them in between (a reorg) must win, not be overwritten by a
    confirmation of a block that is gone. Here the rescan's write lands while the node is asked."""
    from wallet.state.deposits import DepositBook

    to = new_address()
    chain.send_eth(to, 6100)
    [seen_event] = deposit_events(kafka, to, "deposit.seen")
    deposit_id = seen_event["payload"]["deposit_id"]
    book = DepositBook(redis_client, Keyspace("wtest"))
    scanner = key_wiring.scanner
    ask_node = scanner._rpc.block_refs

    def block_refs_while_a_rescan_retracts(heights):
        with redis_client.pipeline(transaction=True) as rescan:
            book.retract_in(rescan, deposit_id)
            rescan.execute()
        return ask_node(heights)

    # The stack's own ticks stay out of it: this test's tick is the one that finds the deposit due.
    scheduler = redis_client.lock(Keyspace("wtest").scheduler_lock, timeout=60, blocking_timeout=30)
    assert scheduler.acquire()
    try:
        chain.mine(K)
        scanner._rpc.block_refs = block_refs_while_a_rescan_retracts
        scanner.confirm(chain.head())
        assert book.watch_recorded(redis_client.pipeline(), [deposit_id]) == {}  # still retracted
    finally:
        scanner._rpc.block_refs = ask_node
        scheduler.release()
    sentinel = new_address()  # confirmed after: anything confirmed for `to` would be on Kafka by then
    chain.send_eth(sentinel, 1)
    chain.mine(K + 1)
    assert deposit_events(kafka, sentinel, "deposit.confirmed")
    assert not [e for e in kafka.so_far("transaction") if e["type"] == "deposit.confirmed"
                and e["payload"].get("to") == to]


def test_rescan_and_duplicate_block_tasks_emit_nothing_new(
    chain: Chain, kafka: KafkaProbe, new_address, celery_app
) -> None:
    from tasks.blocks import process_block, rescan

    to = new_address()
    receipt = chain.send_eth(to, 31337)
    height = receipt["blockNumber"]
    chain.mine(K)
    assert deposit_events(kafka, to, "deposit.confirmed")

    rescan.delay(height - 1, height + 1).get(timeout=30)
    result = process_block.apply_async((height,), ignore_result=False).get(timeout=30)
    assert result["already_done"] is True and result["deposits"] == 0
    # A sentinel deposit in a later block: its events are behind any the rescan could have made.
    sentinel = new_address()
    chain.send_eth(sentinel, 1)
    assert deposit_events(kafka, sentinel, "deposit.seen")
    events = [e for e in kafka.so_far("transaction") if e["payload"].get("to") == to]
    assert sorted(e["type"] for e in events) == ["deposit.confirmed", "deposit.seen"]


@pytest.mark.parametrize("depth", list(range(1, K + 1)))
def test_anvil_reorg_of_depth_retracts_the_deposit(
    depth: int, chain: Chain, kafka: KafkaProbe, new_address
) -> None:
    """anvil_reorg replaces the last `depth` blocks (same heights, new hashes) without our tx.

    The deposit has fewer than K confirmations when the reorg comes (at K it is rightly confirmed,
    and a scheduler tick may do so before the reorg): for depth K its block is not the lowest one
    replaced."""
    to = new_address()
    receipt = chain.send_eth(to, 5150)
    confirmations = min(depth, K - 1)
    if confirmations > 1:
        chain.mine(confirmations - 1)
    [seen_event] = deposit_events(kafka, to, "deposit.seen")
    assert chain.head() - receipt["blockNumber"] + 1 == confirmations <= depth

    chain.rpc("anvil_reorg", [depth, []])
    assert chain.w3.eth.get_block(receipt["blockNumber"])["hash"] != receipt["blockHash"]

    [reverted] = deposit_events(kafka, to, "deposit.reverted")
    assert reverted["payload"]["block_hash"] == seen_event["payload"]["block_hash"]
    sentinel = new_address()  # a deposit after the reorg: once it is confirmed, so is anything due before it
    chain.send_eth(sentinel, 1)
    chain.mine(K + 1)
    assert deposit_events(kafka, sentinel, "deposit.confirmed")
    confirmed = [e for e in kafka.so_far("transaction") if e["type"] == "deposit.confirmed" and e["payload"].get("to") == to]
    # If the node re-included the dropped transaction, only its new block may be confirmed.
    assert all(c["payload"]["block_hash"] != seen_event["payload"]["block_hash"] for c in confirmed)


def test_stored_block_hashes_stay_bounded_on_a_quiet_chain(
    chain: Chain, redis_client, celery_app
) -> None:
    from workers.devstack import wait_for

    ledger = BlockLedger(redis_client, Keyspace("wtest"))
    chain.mine(60)  # empty blocks: no deposit ever comes due
    head = chain.head()
    wait_for(lambda: (ledger.watermark() or -1) >= head, 60, "the watermark")
    # Only the re-check window (K + margin 16) and what the watermark has not passed are kept.
    wait_for(lambda: ledger.scanned_heights()[0] >= head - K - 16 - 1, 30, "old block hashes to be forgotten")


def test_gas_top_ups_from_the_hot_wallet_are_not_deposits(
    chain: Chain, kafka: KafkaProbe, new_address, key_wiring
) -> None:
    to = new_address()
    hot = key_wiring.signer.hot_wallet_address()
    chain.rpc("anvil_setBalance", [hot, hex(10**18)])
    w3 = chain.w3
    top_up = key_wiring.signer.sign_transaction(hot, {
        "chainId": w3.eth.chain_id, "nonce": w3.eth.get_transaction_count(hot, "pending"), "gas": 21_000,
        "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "to": Web3.to_checksum_address(to), "value": 777})
    assert chain.send_raw(top_up.raw)["status"] == 1
    customer = chain.send_eth(to, 888)  # a later block: seen only after the top-up's block was scanned

    [seen] = deposit_events(kafka, to, "deposit.seen")
    assert seen["payload"]["tx_hash"] == customer["transactionHash"].to_0x_hex()
    assert len([e for e in kafka.so_far("transaction") if e["type"] == "deposit.seen" and e["payload"].get("to") == to]) == 1
