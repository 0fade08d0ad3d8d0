"""Content hashes that decide duplicates.

xxh3-128 rather than BLAKE3: deduplication needs collision resistance against accidents, not
against an adversary choosing files, and xxh3 hashes small MIDI files several times faster
(most of the cost of hashing a 10 KB file is the call, and xxh3's is the cheapest).
"""

from __future__ import annotations

import xxhash


def content_hash(data: bytes) -> str:
    """32 hex characters identifying the bytes."""
    return xxhash.xxh3_128_hexdigest(data)
