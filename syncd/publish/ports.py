"""What the relay needs from a stream target (the port), and the message it hands over.

A target keeps an ordered stream whose entry IDs are change-log seqs, and refuses an ID that is not
above its last one: that refusal is what makes a re-publish harmless. ``redis_target`` implements it
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

    async def append(self, stream: str, messages: Sequence[Message], *, expect_last: int) -> int:
        """Add ``messages`` (ascending seqs, all above ``expect_last``) with IDs ``<seq>-0``, if
        the stream's last seq is still ``expect_last``; return how many the stream refused because
        it already had an ID at least as high (already published).

        Raises PublishError, having added nothing, when the stream's last seq is not
        ``expect_last``; and on any failure, after which the caller must ask ``last_seq`` again
        before it sends more (part of the batch may have been added).
        """
        ...

    async def aclose(self) -> None:
        """Close the connection(s). Idempotent."""
        ...
