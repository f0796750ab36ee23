"""Withdrawals signed and broadcast per second through the system, against a raw sign-and-send
loop in the same run.

System: send_transaction tasks -> key-holding worker (plan: one batch of node reads; sign; store
with the nonce claim; broadcast; announce) -> bridge -> Kafka; the clock stops when the last
`withdrawal.submitted` has been read back from Kafka. All sends come from the hot wallet, so they
are serialised on its nonce lock, as they must be.
Baselines, in this process against the same Anvil: eth-account signing + eth_sendRawTransaction
with a local nonce counter and fixed fees (`raw`), and the same with the reads a careful sender
does per send (pending nonce, balance, fees, gas estimate) in one batch (`raw_with_reads`), both
through the wallet's own JSON-RPC transport (wallet.chain.transport).
Anvil mines every transaction into its own block (automine), in both. Compare the ratios.

Authorization (`authz`): the key worker's send path (plan, admit, sign, store, broadcast) driven in
this process, in ABBA rounds of blocks of sends with the real gate (producer signature verified
against the sealed producer list, policy with per-asset, per-destination and per-transaction
limits, the reservation written with the decision) and with a gate that lets everything through;
the ratio is on / off, the median of the rounds'. Also the gate's own cost per request in
microseconds: signature check, policy evaluation, and the decision write (one WATCHed MULTI/EXEC;
in a send it also carries the signed record).
"""

from __future__ import annotations

import os
import statistics
import time
import uuid

from eth_account import Account

from bench.common import EventCounter, bench_stack, save_results
from wallet.chain.transport import Transport
from workers.devstack import Stack

SENDS = int(os.environ.get("BENCH_SENDS", "300"))
FUNDER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # Anvil's first account


def fund(node: Transport, to: str, wei: int) -> None:
    funder = Account.from_key(FUNDER_KEY)
    nonce = int(node.call("eth_getTransactionCount", [funder.address, "pending"]), 16)
    signed = funder.sign_transaction({"chainId": 31337, "nonce": nonce, "gas": 21000, "maxFeePerGas": 10**11,
                                      "maxPriorityFeePerGas": 10**9, "to": to, "value": wei})
    tx_hash = node.call("eth_sendRawTransaction", ["0x" + signed.raw_transaction.hex()])
    # Anvil mines in the background: under load the next request can come first.
    deadline = time.monotonic() + 30
    while not node.call("eth_getTransactionReceipt", [tx_hash]):
        if time.monotonic() > deadline:
            raise RuntimeError(f"funding {to} was not mined")
        time.sleep(0.05)


def raw_rate(node: Transport, with_reads: bool) -> float:
    """Sign and send SENDS transfers from a fresh funded account as fast as one loop can."""
    account = Account.create()
    fund(node, account.address, 10**21)
    nonce = 0
    recipients = [Account.create().address for _ in range(SENDS)]
    started = time.perf_counter()
    for i, to in enumerate(recipients):
        fees = {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}
        if with_reads:
            answers = node.batch([
                ("eth_getTransactionCount", [account.address, "pending"]),
                ("eth_getBalance", [account.address, "pending"]),
                ("eth_feeHistory", [1, "latest", []]),
                ("eth_maxPriorityFeePerGas", []),
                ("eth_estimateGas", [{"from": account.address, "to": to, "value": hex(1000 + i)}]),
            ])
            count, _, history, tip, _ = (a["result"] for a in answers)  # in the order asked
            nonce = int(count, 16)
            base = int(history["baseFeePerGas"][-1], 16)
            fees = {"maxFeePerGas": 2 * base + int(tip, 16), "maxPriorityFeePerGas": int(tip, 16)}
        signed = account.sign_transaction({"chainId": 31337, "nonce": nonce, "gas": 21000, "to": to,
                                           "value": 1000 + i, **fees})
        node.call("eth_sendRawTransaction", ["0x" + signed.raw_transaction.hex()])
        nonce += 1
    return SENDS / (time.perf_counter() - started)


def system_rate(stack: Stack) -> dict[str, float]:
    from tasks.sending import send_transaction
    from wallet.authz.client import sign_request, task_kwargs

    mark = uuid.uuid4().hex
    events = EventCounter(stack.kafka_bootstrap, "transaction")
    signed = [task_kwargs(sign_request(PRODUCER.key, {
        "type": "send_transaction", "to": Account.create().address, "amount": 1000 + i,
        "request_id": f"bench-{mark}-{i}", "meta": {"bench": mark}}, chain_id=stack.config.chain_id, expires_in=3600))
        for i in range(SENDS)]
    started = time.perf_counter()
    for kwargs in signed:
        send_transaction.delay(**kwargs)
    enqueued = time.perf_counter() - started
    events.wait_for(SENDS, mark.encode(), b'"type":"withdrawal.submitted"',
                    timeout=float(os.environ.get("BENCH_TIMEOUT", "600")))
    elapsed = time.perf_counter() - started
    return {"sends": SENDS, "seconds": elapsed, "enqueue_seconds": enqueued, "sends_per_s": SENDS / elapsed}


PRODUCER = Account.create()
BLOCK = 25  # sends per block when alternating gate on / off


class OpenGate:
    """The real gate's interface, letting everything through: the 'authorization off' baseline. The
    send record is stored in a transaction of its own, as it would be without a decision."""

    def __init__(self, client) -> None:
        self._redis = client

    def requester(self, request, auth):
        from wallet.authz.gate import Principal

        return Principal("bench")

    def admit(self, request, value, principal, joined=None):
        from wallet.authz.gate import Decision

        decision = Decision(request_id=request.request_id, kind=request.kind, outcome="allowed", rule="off",
                            requester="bench", request=request, decided_at=time.time())
        if joined is None:
            return decision, False

        def write(pipe) -> bool:
            queue = joined.prepare(pipe)
            if queue is None:
                return False
            pipe.multi()
            queue(pipe)
            return True

        return decision, self._redis.transaction(write, value_from_callable=True)

    def seal_record(self, request, sender):
        return None

    def check_record(self, request, sender, seal):
        return None

    def ensure_not_frozen(self):
        return None


def authz_rates(stack: Stack, w) -> dict[str, float]:
    """Sends/s through the key worker's domain with the real gate and with an open one, alternating
    blocks, in this process; then the gate's cost per request."""
    from wallet.authz import canonical
    from wallet.authz.policy import evaluate, movements_of
    from wallet.sending.service import SendService
    from wallet.sending.validation import withdrawal_request

    admin = w.authz_admin
    state = w.authz_gate.registry.load()
    policy = state.policy.model_dump(mode="json")
    policy.pop("frozen"), policy.pop("frozen_reason")
    policy["assets"] = {"ETH": {"max_per_tx": 10**18, "daily": 10**24, "daily_per_destination": 10**18,
                                "hold_above": 10**18}}
    admin.apply_local("set_policy", {"policy": policy}, f"bench-policy-{uuid.uuid4().hex}")
    on = w.sending
    off = SendService(w.redis, w.keyspace, w.outbox, w.node, w.signer, w.chain_id, on._timing, OpenGate(w.redis))
    expires = int(time.time() + 3600)

    def request(i: int):
        r = withdrawal_request(f"authz-bench-{uuid.uuid4().hex}", Account.create().address, 1000 + i)
        asks = canonical.asks_for_send(w.chain_id, r, expires, PRODUCER.address)
        return r, {"key_id": PRODUCER.address, "expires_at": expires, "signature": canonical.sign(asks, PRODUCER.key)}

    # ABBA rounds of BLOCK sends each (on, off, off, on, ...): a load that drifts during the run (a
    # tracker burst, the relay catching up) weighs on both alike; the ratio is the median of the
    # rounds', so one disturbed block does not decide it.
    rounds = max(1, SENDS // (2 * BLOCK))
    work = [request(i) for i in range(2 * BLOCK * rounds)]
    timings = {"on": 0.0, "off": 0.0}
    pairs = []
    for n in range(rounds):
        order = (("on", on), ("off", off)) if n % 2 == 0 else (("off", off), ("on", on))
        took = {}
        for name, service in order:
            chunk, work = work[:BLOCK], work[BLOCK:]
            started = time.perf_counter()
            for r, auth in chunk:
                outcome = service.send(r, auth=auth)
                assert outcome.status == "submitted", outcome
            took[name] = time.perf_counter() - started
            timings[name] += took[name]
        pairs.append(took["off"] / took["on"])
    rates = {name: BLOCK * rounds / timings[name] for name in timings}
    # The gate alone, per request.
    n = 500
    gate = on.gate
    probes = [request(i) for i in range(n)]
    started = time.perf_counter()
    principals = [gate.authenticate(r, auth) for r, auth in probes]
    authenticate_us = (time.perf_counter() - started) / n * 1e6
    spent = {"out:ETH": 10**20}
    started = time.perf_counter()
    for r, _ in probes:
        evaluate(state.policy, r.kind, movements_of(r, r.amount), spent, time.time())
    evaluate_us = (time.perf_counter() - started) / n * 1e6
    started = time.perf_counter()
    for (r, _), principal in zip(probes, principals, strict=True):
        gate.admit(r, r.amount, principal)
    admit_us = (time.perf_counter() - started) / n * 1e6
    return {"authz_on_sends_per_s": rates["on"], "authz_off_sends_per_s": rates["off"],
            "ratio_on_vs_off": statistics.median(pairs), "ratio_of_totals": rates["on"] / rates["off"],
            "rounds": rounds,
            "authenticate_us": authenticate_us, "policy_evaluate_us": evaluate_us, "decision_write_us": admit_us,
            "gate_total_us": authenticate_us + evaluate_us + admit_us}


def main() -> None:
    with bench_stack() as stack:
        from wallet.settings import Settings
        from wallet.wiring import Wiring

        node = Transport(stack.rpc_url, timeout=30)
        w = Wiring(Settings(master_key_file=stack.master_key_file))
        hot = w.signer.hot_wallet_address()
        fund(node, hot, 10**21)
        # The bench's producer, registered as an operator does on the key host.
        w.authz_admin.apply_local("add_producer", {"key_id": PRODUCER.address, "roles": ["producer"],
                                                   "label": "bench"}, f"bench-{uuid.uuid4().hex}")
        authz = authz_rates(stack, w)
        raw = {"raw_sends_per_s": raw_rate(node, with_reads=False),
               "raw_with_reads_sends_per_s": raw_rate(node, with_reads=True)}
        system = system_rate(stack)
        save_results("sends", {
            "raw": raw, "system": system, "authz": authz,
            "ratio_vs_raw": system["sends_per_s"] / raw["raw_sends_per_s"],
            "ratio_vs_raw_with_reads": system["sends_per_s"] / raw["raw_with_reads_sends_per_s"],
        })

if __name__ == "__main__":
    main()
