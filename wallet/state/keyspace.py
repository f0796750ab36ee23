"""Every Redis key the system writes, in one place, under one deployment prefix."""

from __future__ import annotations

from dataclasses import dataclass

# A request's outcome (its `request` marker, a send record, an authorization decision) is
# remembered this long, which bounds how late a redelivery or a retry stays harmless.
REQUEST_MEMORY_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class Keyspace:
    prefix: str = "wallet"

    # ---- patterns and prefixes over many keys
    @property
    def everything(self) -> str:
        """SCAN pattern of every key of this deployment (Celery's included)."""
        return _glob_escape(self.prefix) + ":*"

    @property
    def locks(self) -> str:
        """SCAN pattern of every lock of this deployment: a start clears what a killed process left."""
        return _glob_escape(self.prefix) + ":lock:*"

    @staticmethod
    def matching(key_start: str) -> str:
        """SCAN pattern of every key that starts with `key_start` (one of the names below with an
        empty id, e.g. `matching(ks.send(""))`)."""
        return _glob_escape(key_start) + "*"

    @property
    def celery_prefix(self) -> str:
        """Celery's own keys (broker queues, results) on a Redis broker: its `global_keyprefix`."""
        return f"{self.prefix}:celery:"

    @property
    def watched(self) -> str:
        """SET of lower-case addresses we own: the deposit scanner's membership test."""
        return f"{self.prefix}:watched"

    @property
    def accounts(self) -> str:
        """HASH address -> JSON facts about the account (request id, created_at). No key material."""
        return f"{self.prefix}:accounts"

    @property
    def sealed_keys(self) -> str:
        """HASH address -> envelope-sealed private key (random-key mode and a random hot wallet)."""
        return f"{self.prefix}:keys"

    @property
    def hd_seed(self) -> str:
        """STRING: the HD wallet's seed, envelope-sealed."""
        return f"{self.prefix}:keys:seed"

    @property
    def hd_next_index(self) -> str:
        """STRING counter: the next deposit index m/44'/60'/0'/0/i to hand out."""
        return f"{self.prefix}:keys:hd:next"

    @property
    def hd_index(self) -> str:
        """HASH address -> HD index: all an HD address stores about its key."""
        return f"{self.prefix}:keys:hd:index"

    @property
    def key_check(self) -> str:
        """A known value sealed by the master key: tells a wrong master key at start-up."""
        return f"{self.prefix}:keys:check"

    @property
    def hot_wallet(self) -> str:
        """STRING: the hot wallet's checksummed address (its key is sealed like any other)."""
        return f"{self.prefix}:hotwallet"

    def request(self, request_id: str) -> str:
        """What a request already produced, so a redelivered task does not do it twice."""
        return f"{self.prefix}:request:{request_id}"

    @property
    def accepted_tasks(self) -> str:
        """ZSET task id -> when a run last touched it: commands handed to Celery, not yet run to
        an end (wallet/state/accepted.py)."""
        return f"{self.prefix}:accepted"

    def restart_written(self, event_id: str) -> str:
        """Set once a supervisor's process.restarted event (and its count) is written, so a write
        whose reply was lost is not made twice (workers/restart_log.py)."""
        return f"{self.prefix}:supervise:written:{event_id}"

    @property
    def resend_lock(self) -> str:
        return f"{self.prefix}:lock:resend"

    def accepted_task(self, task_id: str) -> str:
        """STRING JSON: the accepted command's task name and arguments, to publish it again."""
        return f"{self.prefix}:accepted:{task_id}"

    def request_conflict(self, request_id: str) -> str:
        """Set once the reuse of a done request's id for another request was reported on `errors`
        (its `request` key holds the first request's outcome, so cannot say so)."""
        return f"{self.prefix}:request:{request_id}:conflict"

    @property
    def outbox(self) -> str:
        """STREAM of events waiting for the bridge to forward them to Kafka."""
        return f"{self.prefix}:outbox"

    @property
    def bridge_lock(self) -> str:
        return f"{self.prefix}:lock:bridge"

    @property
    def fsync_barrier(self) -> str:
        """Counter written before a WAITAOF: WAITAOF waits for the connection's own last write, so
        a write here makes it cover every earlier write, whoever made it (wallet/durability.py)."""
        return f"{self.prefix}:durability:barrier"

    # ---- block scanning
    @property
    def scheduled_height(self) -> str:
        """Highest height handed to a process_block task."""
        return f"{self.prefix}:blocks:scheduled"

    @property
    def watermark(self) -> str:
        """Highest height H such that every height <= H is done: where a restart resumes."""
        return f"{self.prefix}:blocks:watermark"

    @property
    def done_heights(self) -> str:
        """ZSET of heights finished above the watermark (blocks finish out of order)."""
        return f"{self.prefix}:blocks:done"

    @property
    def inflight(self) -> str:
        """ZSET height -> when it was (re)scheduled: heights whose task has not finished."""
        return f"{self.prefix}:blocks:inflight"

    @property
    def block_hashes(self) -> str:
        """HASH height -> hash of the block we scanned there, kept for recent heights (reorg checks)."""
        return f"{self.prefix}:blocks:hash"

    @property
    def checked_head(self) -> str:
        """STRING: hash of the head block the last reorg check was made against."""
        return f"{self.prefix}:blocks:checked-head"

    @property
    def unchecked_heights(self) -> str:
        """SET of heights recorded since the last reorg check: the only ones it must ask about while
        the head stays the same."""
        return f"{self.prefix}:blocks:unchecked"

    def staged_events(self, height: int) -> str:
        """LIST of outbox entries of a block, released in height order as the watermark passes it."""
        return f"{self.prefix}:blocks:staged:{height}"

    def block_deposits(self, height: int) -> str:
        """SET of deposit ids recorded from the block we scanned at this height."""
        return f"{self.prefix}:blocks:deposits:{height}"

    def deposit(self, deposit_id: str) -> str:
        """HASH of one deposit: its JSON and status."""
        return f"{self.prefix}:deposit:{deposit_id}"

    @property
    def unconfirmed_deposits(self) -> str:
        """ZSET deposit id -> block number, for deposits seen and not yet confirmed or reverted."""
        return f"{self.prefix}:deposits:unconfirmed"

    def token(self, address: str) -> str:
        """HASH of a token's symbol and decimals, as the contract answered (or did not)."""
        return f"{self.prefix}:token:{address}"

    @property
    def scheduler_lock(self) -> str:
        return f"{self.prefix}:lock:scheduler"

    def block_lock(self, height: int) -> str:
        """One writer per height: a redelivered duplicate block task waits, then finds it done."""
        return f"{self.prefix}:lock:block:{height}"

    @property
    def untraced_blocks(self) -> str:
        """HASH height -> why its internal transfers were not looked for (no tracer, pruned state):
        the heights a rescan against a tracing node completes."""
        return f"{self.prefix}:blocks:untraced"

    @property
    def unreadable_heights(self) -> str:
        """HASH height -> JSON {code, message, since}: heights the node could not serve, reported."""
        return f"{self.prefix}:blocks:unreadable"

    def chain_notice(self, name: str) -> str:
        """STRING set while a once-per-episode notice (degraded tracing, chain id mismatch) stands."""
        return f"{self.prefix}:chain:notice:{name}"

    @property
    def node_capabilities(self) -> str:
        """HASH endpoint id -> JSON of what the endpoint offers (probed): shown by `scan status`."""
        return f"{self.prefix}:chain:capabilities"

    def rpc_budget(self, endpoint_id: str) -> str:
        """HASH of the shared calls-per-second budget of one endpoint (tokens, last refill)."""
        return f"{self.prefix}:chain:budget:{endpoint_id}"

    @property
    def endpoint_health(self) -> str:
        """HASH endpoint id -> JSON {down_until, reason}: endpoints skipped until then."""
        return f"{self.prefix}:chain:endpoints"

    @property
    def chain_outage(self) -> str:
        """Set while the node is unreachable: the outage is announced once, not once per retry."""
        return f"{self.prefix}:chain:outage"

    # ---- outgoing transactions
    def send(self, request_id: str) -> str:
        """STRING: JSON record of one outgoing request: its signed attempts (raw bytes), status, result."""
        return f"{self.prefix}:send:{request_id}"

    def sender_nonces(self, address: str) -> str:
        """HASH nonce -> request id: the nonces a sender's unfinished requests hold."""
        return f"{self.prefix}:nonces:{address.lower()}"

    def sender_lock(self, address: str) -> str:
        return f"{self.prefix}:lock:sender:{address.lower()}"

    @property
    def sends_inflight(self) -> str:
        """ZSET request id -> when the tracker should next act on it (rebroadcast or replace)."""
        return f"{self.prefix}:sends:inflight"

    @property
    def tracker_lock(self) -> str:
        return f"{self.prefix}:lock:tracker"

    # ---- authorization (sealed with a key derived from the master key; verified on every read)
    @property
    def authz_state(self) -> str:
        """STRING: the sealed producer list and policy (JSON + HMAC), with its change history."""
        return f"{self.prefix}:authz:state"

    def authz_decision(self, request_id: str) -> str:
        """STRING: the sealed decision on one request (allowed, held, approved, rejected)."""
        return f"{self.prefix}:authz:decision:{request_id}"

    def authz_ledger(self, bucket: str) -> str:
        """HASH slot start (epoch s) -> amount reserved in that slot, for one rolling 24 h limit
        (wallet.authz.ledger)."""
        return f"{self.prefix}:authz:ledger:{bucket}"

    def authz_signature(self, signature_hash: str) -> str:
        """STRING: the request id a producer signature was used for (replays are refused)."""
        return f"{self.prefix}:authz:sig:{signature_hash}"

    @property
    def authz_held(self) -> str:
        """ZSET request id -> when it was held: requests waiting for a second approver."""
        return f"{self.prefix}:authz:held"

    @property
    def authz_audit(self) -> str:
        """STREAM: every authorization decision and policy change (append-only audit trail)."""
        return f"{self.prefix}:authz:audit"

    # ---- sweeps
    def sweep(self, sweep_id: str) -> str:
        """STRING: JSON of one sweep: the deposits that triggered it, its stage, its requests."""
        return f"{self.prefix}:sweep:{sweep_id}"

    @property
    def sweeps_active(self) -> str:
        """HASH "address|asset" -> sweep id: at most one sweep per address and asset at a time."""
        return f"{self.prefix}:sweeps:active"

    @property
    def swept_deposits(self) -> str:
        """SET of deposit ids already counted towards a sweep."""
        return f"{self.prefix}:sweeps:deposits"

    @property
    def sweep_lock(self) -> str:
        return f"{self.prefix}:lock:sweeps"

    # ---- metrics (see wallet/metrics.py): one HASH per kind, a field per `name{labels}`
    @property
    def metrics_counters(self) -> str:
        """HASH series -> count, incremented by every process (HINCRBY): RPC calls, blocks scanned, ..."""
        return f"{self.prefix}:metrics:counters"

    @property
    def metrics_histograms(self) -> str:
        """HASH `series|bucket` (and `|sum`, `|count`) -> value: latency histograms of every process."""
        return f"{self.prefix}:metrics:histograms"

    @property
    def metrics_gauges(self) -> str:
        """HASH series -> last value written by any process (the head the scheduler read)."""
        return f"{self.prefix}:metrics:gauges"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
