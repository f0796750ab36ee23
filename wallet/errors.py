"""Named errors with stable codes.

`RetryableError`: the world is briefly unavailable; a task retries with backoff.
`FatalError`: the request itself is wrong; retrying cannot help, the caller gets the code.
Messages never carry key material: they are written to logs, task results and the `errors` topic.
"""

from __future__ import annotations

from typing import Any


class WalletError(Exception):
    code: str = "wallet_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class RetryableError(WalletError):
    code = "retryable"


class FatalError(WalletError):
    code = "fatal"


class ChainUnavailable(RetryableError):
    code = "chain_unavailable"


class NodeTimedOut(ChainUnavailable):
    """The node took longer than the client's timeout: it may be down, or the request too big."""


class RateLimited(ChainUnavailable):
    """The node or provider asked us to slow down for longer than a request may wait."""

    code = "rate_limited"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class ChainIdMismatch(FatalError):
    """The node serves another chain than WALLET_CHAIN_ID: scanning or sending there would be wrong."""

    code = "chain_id_mismatch"


class PublishFailed(RetryableError):
    code = "publish_failed"


class InvalidCommand(FatalError):
    """A command that cannot be done as sent; `code` is one of the COMMAND_* codes below."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.code = code
        # Rebuilt from its args where it is read back (a Celery result, a pickle): the caller of a
        # task gets the same error, code included, not a wrapper around its text.
        self.args = (code, message, self.details)


# Stable codes on the `errors` topic for rejected commands.
COMMAND_INVALID_JSON = "invalid_json"
COMMAND_NOT_AN_OBJECT = "not_an_object"
COMMAND_UNKNOWN_TYPE = "unknown_command_type"
COMMAND_INVALID_FIELDS = "invalid_fields"
COMMAND_TOO_LARGE = "command_too_large"
# Its task was published again `MAX_RESENDS` times and never ran to an end (wallet/services/resend.py).
COMMAND_NOT_COMPLETED = "command_not_completed"


class CustodyError(FatalError):
    code = "custody_error"


class MasterKeyMissing(CustodyError):
    code = "master_key_missing"


class MasterKeyInvalid(CustodyError):
    code = "master_key_invalid"


class MasterKeyMismatch(CustodyError):
    """The configured master key is not the one the stored keys were wrapped with."""

    code = "master_key_mismatch"


class SeedMissing(CustodyError):
    """HD addresses exist but their seed is gone: restore it, never make a new one."""

    code = "seed_missing"


class UnknownAddress(CustodyError):
    """We hold no key for this address."""

    code = "unknown_address"


class ChainDataInvalid(RetryableError):
    """The node answered something that is not what the protocol says (garbage, a missing field,
    receipts of another block). Retried: a node mid-reorg or restarting says such things briefly."""

    code = "chain_data_invalid"


class BlockNotFound(RetryableError):
    """The node does not (yet, or any more) have a block at that height."""

    code = "block_not_found"


# Stable codes on `errors` for outgoing requests (sends, sweeps, contract deploys and calls) that
# cannot be done: nothing was signed or broadcast for them.
SEND_INVALID_ADDRESS = "invalid_address"
SEND_INVALID_AMOUNT = "invalid_amount"
SEND_UNKNOWN_TOKEN = "unknown_token"
SEND_INSUFFICIENT_FUNDS = "insufficient_funds"
SEND_EXECUTION_REVERTED = "execution_reverted"
SEND_UNKNOWN_SENDER = "unknown_sender"
SEND_IDEMPOTENCY_CONFLICT = "idempotency_conflict"
SEND_INVALID_CONTRACT_CALL = "invalid_contract_call"
IDEMPOTENCY_CONFLICT = SEND_IDEMPOTENCY_CONFLICT  # not only sends: every request with a request id


def ensure_same_request(request_id: str, first: Any, again: Any) -> None:
    """A request id names one request. The same id with the same fields (its identity: what must
    match, `meta` aside) is that request again, and gets its first answer; with other fields it
    is refused, never answered with what the first request did.

    Raises:
        InvalidCommand: idempotency_conflict.
    """
    if first != again:
        raise InvalidCommand(
            IDEMPOTENCY_CONFLICT,
            f"request id {request_id!r} was already used for a different request",
            details={"request_id": request_id})


# ---- authorization (wallet.authz): a request the key worker will not sign. Nothing was signed.
AUTHZ_UNAUTHORIZED = "unauthorized_request"  # no signature, or a kind that may not be asked for
AUTHZ_SIGNATURE_INVALID = "signature_invalid"  # the signature is not the named producer's over these fields
AUTHZ_EXPIRED = "request_expired"  # past its expires_at (or expiring too far ahead)
AUTHZ_UNKNOWN_PRODUCER = "unknown_producer"  # key id not registered, revoked, or without the role
AUTHZ_REPLAYED = "request_replayed"  # a signature already used for another request id
AUTHZ_TAMPERED = "request_tampered"  # a stored request or decision whose seal does not verify
AUTHZ_STATE_INVALID = "authz_state_invalid"  # the sealed producer list / policy is missing or forged
AUTHZ_APPROVAL_INVALID = "approval_invalid"  # not held, or the approver is the requester
# Policy (evaluated in the key worker).
POLICY_FROZEN = "wallet_frozen"
POLICY_MAX_PER_TX = "policy_max_per_tx"
POLICY_DAILY_LIMIT = "policy_daily_limit"
POLICY_DESTINATION_LIMIT = "policy_destination_limit"
POLICY_DESTINATION_NOT_ALLOWED = "destination_not_allowed"
POLICY_DESTINATION_NOT_YET_ALLOWED = "destination_not_yet_allowed"
POLICY_REJECTED_BY_APPROVER = "rejected_by_approver"


class AuthorizationError(InvalidCommand):
    """The request is not authorized (signature, producer, expiry, replay, seals): one `errors`
    event with the code, nothing signed. Codes: AUTHZ_*."""


class PolicyViolation(InvalidCommand):
    """An authorized request the policy refuses (limits, allow-list, freeze). Codes: POLICY_*."""


class WalletFrozen(RetryableError):
    """Signing is frozen: a replacement or re-sign of an already authorized request waits."""

    code = POLICY_FROZEN


class SenderBusy(RetryableError):
    """Another send from the same address holds its nonce lock for longer than we wait."""

    code = "sender_busy"


class BroadcastUncertain(RetryableError):
    """The node did not say whether it took a signed transaction; the stored bytes are sent again."""

    code = "broadcast_uncertain"
