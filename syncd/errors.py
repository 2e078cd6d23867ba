"""The SyncdError tree: every error syncd raises on purpose, with the context an operator needs.

Each error carries fields (``op``, ``source``, ``hint`` ...) rather than only a sentence, and says whether
retrying can help (``retryable``). The CLI and the HTTP layer turn these into output in one place each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class SyncdError(Exception):
    """Base of every deliberate syncd error."""

    retryable: bool = False

    def __init__(
        self, message: str, *, op: str | None = None, hint: str | None = None, **context: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        self.op = op
        self.hint = hint
        self.context: dict[str, Any] = dict(context)

    def fields(self) -> dict[str, Any]:
        """Structured fields for a log event (never secrets)."""
        out: dict[str, Any] = {"error": self.message, "error_type": type(self).__name__}
        if self.op:
            out["op"] = self.op
        if self.hint:
            out["hint"] = self.hint
        out.update(self.context)
        return out


class ConfigError(SyncdError):
    """Configuration is invalid. ``problems`` lists (key, value, why) for every bad key."""

    def __init__(
        self, problems: Sequence[tuple[str, str, str]], *, hint: str | None = None
    ) -> None:
        self.problems = list(problems)
        lines = [f"{key}: {why} (got {value})" for key, value, why in self.problems]
        super().__init__("invalid configuration:\n  " + "\n  ".join(lines), op="config", hint=hint)


class StoreError(SyncdError):
    """The database could not do what was asked (schema, corruption, I/O)."""


class StoreClosed(StoreError):
    """The store was used after close()."""


class SchemaTooNew(StoreError):
    """The database was written by a newer syncd; refuse rather than corrupt it."""


class AlreadyRunning(StoreError):
    """Another syncd process holds the database."""


class ChangelogGap(SyncdError):
    """A consumer asked for entries older than what retention kept."""

    def __init__(
        self, after: int, oldest: int, *, message: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(
            message
            or f"change log gap: entries after seq {after} were pruned; oldest kept is {oldest}",
            op="changes.read",
            hint=hint or "re-read the mirror (inventory_counts) and resume from the head seq",
            after=after,
            oldest=oldest,
        )
        self.after = after
        self.oldest = oldest


class UpstreamError(SyncdError):
    """An upstream API call failed.

    ``status`` is the HTTP status (None for network errors), ``vendor_errors`` the vendor's own error
    objects (Square's ``errors`` array, a job API's ``errors[]``), ``retryable`` whether a retry can help.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        vendor_errors: Sequence[Mapping[str, Any]] = (),
        retryable: bool = False,
        retry_after: float | None = None,
        op: str | None = None,
        hint: str | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, op=op, hint=hint, status=status, **context)
        self.status = status
        self.vendor_errors = [dict(e) for e in vendor_errors]
        self.retryable = retryable
        self.retry_after = retry_after

    def fields(self) -> dict[str, Any]:
        out = super().fields()
        if self.vendor_errors:
            out["vendor_errors"] = self.vendor_errors
        return out


class UpstreamDataError(UpstreamError):
    """The upstream answered 2xx but the body is not what the API promises (bad JSON, bad field)."""


class OAuthGrantRevoked(UpstreamError):
    """The seller's OAuth grant no longer works: Square rejected the refresh token (invalid, expired
    or revoked). No retry helps; the seller must authorise the app again."""


class SignatureError(SyncdError):
    """A webhook's signature is missing or does not match any configured key."""


class JobProviderError(SyncdError):
    """A job provider is misconfigured or a registration is invalid."""


class JobNotFound(SyncdError):
    """No tracked job has the id (or ``provider:job_id``) asked for."""


class UnknownSource(SyncdError):
    """No source of that name is known to the database (never synced, or already forgotten)."""


class SourceStillConfigured(SyncdError):
    """A source cannot be forgotten while the config (the file, or the running daemon's) still
    has it: it would come back at the next start or reload."""


class DownloadRefused(SyncdError):
    """A job's result download was refused: foreign host, path traversal, or over the size limit."""


class PublishError(SyncdError):
    """Publishing the change log to a stream failed (issue 7): the target is unreachable or refused
    the batch, or the stream is not where the relay expects it. The relay reconciles and retries."""

    retryable = True


class StreamConflict(PublishError):
    """The stream is not this database's to publish to (issue 11): another database claimed it
    (``reason`` ``owned``), or it holds seqs this change log never wrote (``ahead``). The relay
    writes nothing to it and checks again after a backoff; an operator resolves it."""

    def __init__(self, message: str, *, reason: str, **context: Any) -> None:
        super().__init__(message, reason=reason, **context)
        self.reason = reason


class UnknownEndpoint(SyncdError):
    """No outbound endpoint of that name (``[outbound.NAME]``) in the config."""


class ReplayRefused(SyncdError):
    """An outbound replay asked for a position the change log cannot give (beyond its head)."""
