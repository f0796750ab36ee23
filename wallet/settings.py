"""One typed settings object, read from WALLET_* environment variables.

Every process (workers, beat, bridge, command consumer, CLI, tests, docker-compose) is configured
through these same variables, so the dev stack and production differ only in values.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WALLET_", extra="ignore")

    # Redis holds state, the outbox, and (by default) the Celery broker and result backend.
    redis_url: str = "redis://127.0.0.1:6379/0"
    celery_broker_url: str | None = None  # defaults to redis_url
    celery_result_backend: str | None = None  # defaults to redis_url
    # Redis broker only: a message a worker took and did not acknowledge within this is delivered
    # again (its worker died). Bounds how soon a dead worker's task runs elsewhere; must exceed how
    # long any task holds its message (celeryconfig.py explains the bound). RabbitMQ needs none.
    broker_visibility_timeout_seconds: int = Field(default=45, ge=10)
    # Every Redis key this system writes starts with this, so several deployments can share a Redis.
    key_prefix: str = "wallet"

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_topic_prefix: str = ""
    kafka_command_group: str = "eth-wallet-manager"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    # Small in tests: a group join waits for the rebalance timeout.
    kafka_max_poll_interval_ms: int = 300_000
    # Topics as `wallet topics create` makes them (existing topics are left as they are).
    # Partitions: how many command consumers can share `command`, and how far event consumers
    # scale; every event is keyed (by its address), so one address's events stay in one partition.
    kafka_partitions: int = Field(default=1, ge=1)
    # 3 on a production cluster; 1 on a single broker (the dev stack, compose's default).
    kafka_replication_factor: int = Field(default=1, ge=1)
    # With acks=all, a write needs this many in-sync replicas (2 of 3: one broker may be down, none
    # lost). Unset: the broker's default.
    kafka_min_insync_replicas: int | None = Field(default=None, ge=1)

    # The node's JSON-RPC URL. It may carry a provider's API key: it is shown only as
    # scheme://host:port anywhere (events, logs, task results, errors).
    eth_rpc_url: str = "http://127.0.0.1:8545"
    # Several endpoints, in order of preference (JSON list or comma-separated); when set, it
    # replaces eth_rpc_url. One that is down, erroring or behind is skipped and tried again later.
    eth_rpc_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # An endpoint that traces old blocks (an archive node), asked for the traces the main one pruned.
    eth_trace_rpc_url: str | None = None
    # Calls per second per endpoint across all workers (a batch item is a call, as providers count).
    eth_rpc_max_rps: float | None = Field(default=None, gt=0)
    # Largest JSON-RPC batch sent; lowered on its own when the endpoint refuses a size.
    eth_rpc_max_batch: int = Field(default=200, ge=1)
    # How long one request may wait out a provider's rate limit before the task retries later.
    eth_rpc_max_wait_seconds: float = Field(default=30.0, gt=0)
    eth_rpc_timeout_seconds: float = Field(default=10.0, gt=0)
    # An endpoint whose head is more than this many blocks behind the best one is skipped.
    eth_rpc_max_lag_blocks: int = Field(default=5, ge=1)
    # When unset, asked from the node once (eth_chainId) and cached for the process. When set, a
    # node that serves another chain is refused.
    chain_id: int | None = None

    # The master key that wraps private keys at rest: 32 bytes as hex, or a file holding that hex.
    # Only the key-holding worker is given it.
    master_key: SecretStr | None = None
    master_key_file: Path | None = None
    # How new deposit addresses get their keys: derived from one sealed HD seed (BIP-44 index per
    # address), or one random sealed key each. Existing addresses keep working if this changes.
    key_mode: Literal["hd", "random"] = "hd"

    max_command_bytes: int = Field(default=64 * 1024, gt=0)
    max_batch_count: int = Field(default=1000, gt=0)
    # A command taken from Kafka whose task no run has touched for this long is published to Celery
    # again, same task id (its message was lost: wallet/state/accepted.py). Above the longest retry
    # backoff (30 s) plus the longest task, so a task that is merely retrying is left alone.
    command_resend_after_seconds: float = Field(default=120.0, ge=5)

    bridge_batch_size: int = Field(default=500, gt=0)
    # How long the relay waits for more entries when a read brought fewer than a batch: one send
    # writes its events in transactions milliseconds apart, and each batch costs a produce, a flush
    # and a delete, so under load this halves the relay's work for a few ms of latency. 0: none.
    bridge_linger_ms: int = Field(default=5, ge=0, le=1000)
    # How long one relay task keeps forwarding before it hands over to its successor.
    bridge_budget_seconds: float = Field(default=30.0, gt=0)
    bridge_interval_seconds: float = Field(default=5.0, gt=0)
    # The relay's lease. A relay killed mid-run blocks forwarding for at most this long.
    bridge_lock_seconds: int = Field(default=60, gt=0)
    # A produce not acknowledged within this fails and its outbox entry stays for the next try.
    # Kept well under bridge_lock_seconds so a live relay never outlasts its lease while waiting.
    kafka_delivery_timeout_ms: int = Field(default=20_000, ge=1_000)
    # What makes an outbox entry durable before the relay forwards it (wallet/durability.py):
    # "auto" reads Redis's config and version (appendfsync always, else WAITAOF on 7.2+, else the
    # relay refuses); "always" vouches for appendfsync always where CONFIG GET is disabled;
    # "waitaof" requires WAITAOF; "none" forwards without the guarantee (loudly).
    redis_durability: Literal["auto", "always", "waitaof", "none"] = "auto"
    # How long one WAITAOF may wait for the local fsync before the batch is retried.
    redis_fsync_timeout_ms: int = Field(default=5_000, ge=100)

    # ---- deposit scanning
    # A deposit is confirmed this many blocks deep (1 = in the head block).
    required_confirmations: int = Field(default=12, ge=1)
    # Where a fresh install starts scanning; unset: the head at the first scheduler tick.
    start_height: int | None = Field(default=None, ge=0)
    scan_interval_seconds: float = Field(default=2.0, gt=0)
    # Most new heights one scheduler tick hands out: bounds the queue after long downtime.
    scan_max_new_per_tick: int = Field(default=500, gt=0)
    # Most heights one task scans with one fetch. Only a backlog is grouped: at the chain tip
    # each new height is its own task, so a deposit is not held back waiting for company.
    scan_group_size: int = Field(default=25, ge=1)
    # A group is fetched as this many concurrent JSON-RPC batches: keeps the node busy while the
    # worker waits on it (profiled: one request in flight per worker left the node half idle).
    scan_fetch_parallelism: int = Field(default=2, ge=1, le=8)
    # A height whose task has not finished after this is handed out again (its worker died).
    scan_stale_seconds: float = Field(default=120.0, gt=0)
    # How many recent heights keep their hash for reorg checks, beyond the confirmation depth.
    reorg_margin: int = Field(default=16, ge=0)
    # Look for internal ETH transfers with the node's call tracer when it has one.
    trace_internal_transfers: bool = True

    # ---- outgoing transactions
    # Receipts are checked, and stuck transactions found, this often.
    send_track_interval_seconds: float = Field(default=2.0, gt=0)
    # A broadcast transaction not mined after this is replaced on the same nonce with higher fees.
    send_replace_after_seconds: float = Field(default=180.0, gt=0)
    # A signed transaction whose broadcast is not known to have succeeded is sent again after this.
    send_rebroadcast_after_seconds: float = Field(default=15.0, gt=0)
    # Replacement fees: at least this much above the previous attempt (nodes require >= 10%).
    send_fee_bump_percent: int = Field(default=20, ge=10, le=500)
    # The per-sender nonce lock's lease. The nonce slot itself is also checked in the write, so a
    # lease that runs out never lets two requests take one nonce; it only costs a retry.
    send_lock_seconds: float = Field(default=30.0, gt=0)

    # ---- sweeps to the cold wallet (off while no cold wallet is set)
    cold_wallet_address: str | None = None
    # Base units per asset ("ETH" or a token address) at which confirmed deposits are swept.
    sweep_thresholds: dict[str, int] = Field(default_factory=dict)
    # Threshold of tokens not in sweep_thresholds; unset: only listed tokens are swept.
    sweep_default_token_threshold: int | None = Field(default=None, gt=0)
    sweep_interval_seconds: float = Field(default=15.0, gt=0)

    # ---- metrics exporter (`python -m workers.metrics`)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9808, ge=0, le=65535)
    # "user:password": /metrics then asks for HTTP basic auth (as Flower's --basic-auth).
    metrics_basic_auth: SecretStr | None = None
    # Base units per asset ("ETH" or a token address) the hot wallet should hold at least: exposed
    # as wallet_hot_wallet_floor_base_units, which the HotWalletBelowFloor alert compares against.
    hot_wallet_floors: dict[str, int] = Field(default_factory=dict)

    # A height whose task failed this many times in a row is reported (`block.unreadable`).
    scan_report_after_failures: int = Field(default=4, ge=1)

    @field_validator("eth_rpc_urls", mode="before")
    @classmethod
    def _urls(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @property
    def rpc_endpoints(self) -> list[str]:
        """The node endpoints in order of preference."""
        return list(self.eth_rpc_urls) or [self.eth_rpc_url]

    @property
    def broker_url(self) -> str:
        return self.celery_broker_url or self.redis_url

    @property
    def result_backend(self) -> str:
        return self.celery_result_backend or self.redis_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
