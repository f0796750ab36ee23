"""Builds the domain objects from Settings. One place, so every process wires them the same way."""

from __future__ import annotations

from functools import cached_property

import redis

from wallet.authz.admin import AuthzAdmin
from wallet.authz.gate import Gate
from wallet.authz.sealed import Sealer, derive_seal_key
from wallet.chain.budget import SharedCallBudget
from wallet.chain.endpoints import FailoverRpc
from wallet.chain.health import ChainHealth
from wallet.chain.profile import NodeProfiles
from wallet.chain.rpc import RpcClient
from wallet.chain.transport import display_url
from wallet.custody.envelope import KeyEnvelope
from wallet.custody.master_key import load_master_key
from wallet.custody.signer import Signer
from wallet.custody.vault import KeyVault
from wallet.deposits.scanner import DepositScanner
from wallet.deposits.tokens import TokenDirectory
from wallet.durability import DurabilityGate
from wallet.metrics import Metrics
from wallet.outbox import Outbox
from wallet.sending.node import NodeGateway
from wallet.sending.planner import Planner
from wallet.sending.service import SendService, SendTiming
from wallet.sending.sweeps import SweepConfig, SweepPolicy
from wallet.sending.tracker import Tracker
from wallet.services.accounts import AccountService
from wallet.services.reads import Reads
from wallet.settings import Settings
from wallet.state.accepted import AcceptedTasks
from wallet.state.keyspace import Keyspace
from wallet.state.locks import Locks


class Wiring:
    """Lazily built, per process. Holds no key material unless `vault` is asked for."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.redis_url, health_check_interval=30)

    @cached_property
    def keyspace(self) -> Keyspace:
        return Keyspace(self.settings.key_prefix)

    @cached_property
    def locks(self) -> Locks:
        return Locks(self.redis, self.keyspace)

    @cached_property
    def accepted(self) -> AcceptedTasks:
        return AcceptedTasks(self.redis, self.keyspace)

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self.redis, self.keyspace.outbox, event_counts=self.keyspace.metrics_counters)

    @cached_property
    def durability(self) -> DurabilityGate:
        """The fsync barrier before anything leaves: the relay's batches, created addresses."""
        return DurabilityGate(self.redis, self.settings.redis_durability, self.keyspace.fsync_barrier,
                              self.settings.redis_fsync_timeout_ms)

    @cached_property
    def metrics(self) -> Metrics:
        """This process's counts (RPC calls, blocks scanned, ...), written to Redis in batches."""
        return Metrics(self.redis, self.keyspace)

    @cached_property
    def chain_id(self) -> int:
        if self.settings.chain_id is not None:
            return self.settings.chain_id
        with self._endpoint_client(self.settings.rpc_endpoints[0]) as rpc:
            return rpc.chain_id()

    @cached_property
    def vault(self) -> KeyVault:
        """Loads the master key and checks it against the store: only the key-holding worker calls this."""
        vault = KeyVault(
            self.redis,
            self.keyspace,
            KeyEnvelope(load_master_key(self.settings.master_key, self.settings.master_key_file)),
            self.settings.key_mode,
        )
        vault.verify_master_key()
        return vault

    @cached_property
    def signer(self) -> Signer:
        """Signs for managed addresses: only the key-holding worker (`keys` queue) calls this."""
        return Signer(self.vault)

    @cached_property
    def rpc(self) -> RpcClient | FailoverRpc:
        return self.new_rpc_client()

    def new_rpc_client(self) -> RpcClient | FailoverRpc:
        """A reader for the node (one per thread: it holds HTTP sessions), shaped by the settings:
        batch cap, waits for rate limits, the shared calls-per-second budget, the trace endpoint,
        and failover when several endpoints are configured."""
        s = self.settings
        clients = [self._endpoint_client(url) for url in s.rpc_endpoints]
        if len(clients) == 1:
            return clients[0]
        return FailoverRpc(clients, self.redis, self.keyspace, self.chain_health, max_lag=s.eth_rpc_max_lag_blocks)

    def _endpoint_client(self, url: str) -> RpcClient:
        s = self.settings
        trace_source = None
        if s.eth_trace_rpc_url:
            trace_source = RpcClient(s.eth_trace_rpc_url, timeout=s.eth_rpc_timeout_seconds,
                                     max_batch=s.eth_rpc_max_batch, budget=self._budget(s.eth_trace_rpc_url),
                                     max_wait=s.eth_rpc_max_wait_seconds)
            trace_source.transport.observer = self.metrics.rpc_observer
        client = RpcClient(url, timeout=s.eth_rpc_timeout_seconds, max_batch=s.eth_rpc_max_batch,
                           budget=self._budget(url), max_wait=s.eth_rpc_max_wait_seconds, trace_source=trace_source)
        client.transport.observer = self.metrics.rpc_observer
        return client

    def _budget(self, url: str) -> SharedCallBudget | None:
        rate = self.settings.eth_rpc_max_rps
        return SharedCallBudget(self.redis, self.keyspace, url, rate) if rate else None

    @cached_property
    def scanner(self) -> DepositScanner:
        s = self.settings
        return DepositScanner(
            self.redis, self.keyspace, self.rpc, TokenDirectory(self.redis, self.keyspace, self.rpc),
            self.outbox, self.chain_id, s.required_confirmations, s.reorg_margin, s.trace_internal_transfers,
            rpc_factory=self.new_rpc_client, fetch_parallelism=s.scan_fetch_parallelism,
            health=self.chain_health, metrics=self.metrics,
        )

    @cached_property
    def chain_health(self) -> ChainHealth:
        return ChainHealth(self.redis, self.keyspace, self.outbox, self.chain_id,
                           display_url(self.settings.rpc_endpoints[0]))

    @cached_property
    def node_profiles(self) -> NodeProfiles:
        return NodeProfiles(self.redis, self.keyspace, self.chain_health, self.settings.chain_id)

    @cached_property
    def accounts(self) -> AccountService:
        return AccountService(self.redis, self.keyspace, self.vault, self.outbox, self.chain_id,
                              durable=self.durability.barrier)

    @cached_property
    def node(self) -> NodeGateway:
        """Node access for sending and tracking (one JSON-RPC session per thread)."""
        return NodeGateway(self.new_rpc_client)

    @cached_property
    def reads(self) -> Reads:
        """Read-only commands; a general worker's."""
        return Reads(self.redis, self.outbox, self.node, self.chain_id)

    @cached_property
    def sending(self) -> SendService:
        """Signs and broadcasts: only the key-holding worker (`keys` queue) calls this."""
        s = self.settings
        return SendService(self.redis, self.keyspace, self.outbox, self.node, self.signer, self.chain_id,
                           SendTiming(s.send_lock_seconds, s.send_fee_bump_percent,
                                      s.send_rebroadcast_after_seconds, s.send_replace_after_seconds),
                           self.authz_gate)

    @cached_property
    def authz_gate(self) -> Gate:
        """Verifies producer signatures, the sealed producer list and policy, and records decisions:
        needs the master key (its seal key is derived from it), so only the key-holding worker (or
        an operator's CLI on the key host) builds one."""
        seal_key = derive_seal_key(load_master_key(self.settings.master_key, self.settings.master_key_file))
        self.vault  # noqa: B018 - the master key must be the store's before anything is sealed with it
        return Gate(self.redis, self.keyspace, self.outbox, self.chain_id, Sealer(seal_key),
                    holds_key=self.signer.holds_key, hot_wallet=self.signer.hot_wallet_address)

    @cached_property
    def authz_admin(self) -> AuthzAdmin:
        return AuthzAdmin(self.authz_gate, self.settings.cold_wallet_address)

    @cached_property
    def tracker(self) -> Tracker:
        """Receipts and confirmations of sent transactions; holds no key."""
        s = self.settings
        return Tracker(self.redis, self.keyspace, self.outbox, self.node, self.chain_id,
                       s.required_confirmations, s.send_replace_after_seconds)

    @cached_property
    def sweeps(self) -> SweepPolicy:
        """The sweep policy: plans sweeps to the cold wallet; holds no key."""
        s = self.settings
        config = SweepConfig(s.cold_wallet_address, s.sweep_thresholds, s.sweep_default_token_threshold)
        return SweepPolicy(self.redis, self.keyspace, self.outbox, self.sending_planner, self.chain_id, config)

    @cached_property
    def sending_planner(self) -> Planner:
        return Planner(self.node)
