"""Splitting document units into chunks.

``split_spans`` is a recursive splitter that works on character offsets, so every chunk can be
traced back to its place (and page) in the document. It tries separators from coarse to fine,
Korean sentence endings before spaces, and merges the pieces greedily up to ``size`` with up to
``overlap`` of trailing context carried into the next chunk.
"""

from __future__ import annotations

import re
from collections.abc import Callable

SEPARATORS = ("\n\n", "\n", "다. ", "요. ", "。", ". ", "? ", "! ", "; ", ", ", " ", "")
ARTICLE_RE = re.compile(r"^제\s*(\d+)\s*조(?:의\s*(\d+))?\s*\(([^)]{1,40})\)")

Length = Callable[[str], int]


def _split_once(text: str, start: int, end: int, sep: str) -> list[tuple[int, int]]:
    if sep == "":
        return [(i, i + 1) for i in range(start, end)]
    pieces, pos = [], start
    while (j := text.find(sep, pos, end)) >= 0:
        cut = j + len(sep)
        pieces.append((pos, cut))
        pos = cut
    if pos < end:
        pieces.append((pos, end))
    return pieces


def split_spans(text: str, size: int, overlap: int, length: Length = len,
                separators: tuple[str, ...] = SEPARATORS) -> list[tuple[int, int]]:
    """Spans ``(start, end)`` of ``text`` covering it in order, each at most ``size`` long."""
    if size < 1:
        raise ValueError("size must be >= 1")
    atoms: list[tuple[int, int]] = []

    def rec(s: int, e: int, level: int) -> None:
        if length(text[s:e]) <= size:
            atoms.append((s, e))
            return
        for k in range(level, len(separators)):
            sep = separators[k]
            if sep and text.find(sep, s, e) < 0:
                continue
            for ps, pe in _split_once(text, s, e, sep):
                rec(ps, pe, k + 1 if sep else k)
            return
        atoms.append((s, e))  # pragma: no cover - "" always splits

    if text:
        rec(0, len(text), 0)
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(atoms):
        s, j = atoms[i][0], i
        while j + 1 < len(atoms) and length(text[s:atoms[j + 1][1]]) <= size:
            j += 1
        spans.append((s, atoms[j][1]))
        if j + 1 >= len(atoms):
            break
        # carry trailing atoms (at most `overlap` long) into the next span, keeping it within size
        k = j + 1
        while (k - 1 > i and length(text[atoms[k - 1][0]:atoms[j][1]]) <= overlap
               and length(text[atoms[k - 1][0]:atoms[j + 1][1]]) <= size):
            k -= 1
        i = k
    out: list[tuple[int, int]] = []
    for s, e in spans:
        s, e = _trim(text, s, e)
        if e > s and (not out or e > out[-1][1]):  # drop blanks and spans inside the previous one
            out.append((s, e))
    return out


def _trim(text: str, s: int, e: int) -> tuple[int, int]:
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return s, e


def article_title(text: str) -> str | None:
    """``제5조(접근매체의 관리)`` when ``text`` opens a statute article."""
    m = ARTICLE_RE.match(text)
    if not m:
        return None
    branch = f"의{m.group(2)}" if m.group(2) else ""
    return f"제{m.group(1)}조{branch}({m.group(3).strip()})"
