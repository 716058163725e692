"""Where the archiver resumes a partition after a restart or a rebalance.

A flush writes, in order: the *pending* range, the object, its manifest entry; then it commits the
offsets. A crash anywhere in between leaves the committed offset at the range's first offset, and:

* the manifest already lists the range → it is archived: skip past it (and commit that);
* it does not → re-archive **exactly** that range, so the object is rewritten under the same key
  (same offsets, same first timestamp) rather than a second object overlapping it.

The pending range outlives its flush, so a partition whose group committed offsets past the log's
start but whose archive holds no pending range has lost its archive (an emptied bucket, the local
S3 restarted: it keeps objects in memory) or moved to a new prefix: it is archived again from the
log's start, from whatever Kafka still holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.archive import PendingRange


@dataclass(frozen=True, slots=True)
class ResumePoint:
    seek_to: int | None  # None: the committed offset (or the earliest one) is right
    close_at: int | None  # a batch must be flushed exactly when it reaches this offset
    reason: str


def resume_point(
    committed: int | None,
    log_start: int,
    pending: PendingRange | None,
    manifest_lists_pending: bool,
) -> ResumePoint:
    """Decide from the committed offset, the log's first offset and the pending range."""
    start = committed if committed is not None else log_start
    if pending is None and start > log_start:
        return ResumePoint(
            log_start,
            None,
            "the archive holds nothing of this partition though "
            "its group committed: re-archiving from the log's start",
        )
    if pending is None or pending.last_offset < start:
        return ResumePoint(None, None, "clean")
    if pending.first_offset != start:
        # committed offsets only ever move to a range's end + 1, so this is a pending range of an
        # older layout or of a foreign writer: trust the broker and start a fresh range
        return ResumePoint(
            None,
            None,
            f"pending {pending.first_offset}..{pending.last_offset} "
            f"does not start at {start}; ignored",
        )
    if manifest_lists_pending:
        return ResumePoint(
            pending.last_offset + 1, None, "pending range already archived: skipping past it"
        )
    return ResumePoint(
        None, pending.last_offset, "pending range not archived: re-archiving exactly that range"
    )
