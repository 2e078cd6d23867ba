"""What the relay needs from a stream target (the port), and the message it hands over.

A target keeps an ordered stream whose entry IDs are change-log seqs, and refuses an ID that is not
above its last one: that refusal is what makes a re-publish harmless. Each stream is claimed by one
database (its ``database_id``), and a batch is added only under that claim: two databases never
write into one stream, even before their seqs would collide (issue 11). ``redis_target`` implements it
for Redis Streams; tests check the conformance statically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """One change-log entry as published: stream ID ``<seq>-0`` and flat fields (UTF-8)."""

    seq: int
    fields: Mapping[bytes, bytes]


class StreamTarget(Protocol):
    """A stream that holds the change log in seq order (one per target and stream key)."""

    @property
    def name(self) -> str:
        """The target's kind (``redis``): the ``target`` of offsets, metrics and logs."""
        ...

    async def last_seq(self, stream: str) -> int:
        """The seq of the stream's last ID ever added (0 for a stream that does not exist).

        Deleting or trimming entries does not lower it; losing the stream (a server that restarted
        without its data, a deleted key) does. Raises PublishError when the target cannot answer.
        """
        ...

    def reset_command(self, stream: str) -> str:
        """How an operator deletes the stream and its claim, for hints (a command line)."""
        ...

    async def owner(self, stream: str) -> str | None:
        """The id of the database that claimed the stream, None while nobody has. Raises
        PublishError when the target cannot answer."""
        ...

    async def claim(self, stream: str, owner: str) -> str:
        """Claim the stream for ``owner`` unless another claim is there already (atomically: of
        two claims, one wins); return the stream's owner afterwards, ``owner`` when the claim
        holds. The claim outlives the stream's entries: it is kept until someone deletes it."""
        ...

    async def append(
        self, stream: str, messages: Sequence[Message], *, expect_last: int, owner: str
    ) -> int:
        """Add ``messages`` (ascending seqs, all above ``expect_last``) with IDs ``<seq>-0``, if
        the stream's last seq is still ``expect_last`` and the stream is still claimed by
        ``owner``; return how many the stream refused because it already had an ID at least as
        high (already published).

        Raises StreamConflict (reason ``owned``), having added nothing, when another owner holds
        the stream; PublishError, having added nothing, when the stream's last seq is not
        ``expect_last`` or the claim is gone; and on any failure, after which the caller must ask
        ``last_seq`` again before it sends more (part of the batch may have been added).
        """
        ...

    async def aclose(self) -> None:
        """Close the connection(s). Idempotent."""
        ...
