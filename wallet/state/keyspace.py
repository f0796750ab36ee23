"""Every Redis key the system writes, in one place, under one deployment prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keyspace:
    prefix: str = "wallet"

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
        """HASH address -> AES-GCM blob of the private key."""
        return f"{self.prefix}:keys"

    @property
    def key_check(self) -> str:
        """A known value sealed by the master key: tells a wrong master key at start-up."""
        return f"{self.prefix}:keys:check"

    def request(self, request_id: str) -> str:
        """What a request already produced, so a redelivered task does not do it twice."""
        return f"{self.prefix}:request:{request_id}"

    @property
    def outbox(self) -> str:
        """STREAM of events waiting for the bridge to forward them to Kafka."""
        return f"{self.prefix}:outbox"

    @property
    def bridge_lock(self) -> str:
        return f"{self.prefix}:lock:bridge"
