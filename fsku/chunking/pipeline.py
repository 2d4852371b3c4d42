"""Documents to chunks: structure-aware units (statute articles, heading sections), then splitting.

Statute text is cut at article boundaries (제N조) so an article's title stays with its
paragraphs; a long article is split further and each continuation chunk repeats the article title.
Other text is grouped under its heading path. Each chunk records the page it starts on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fsku.chunking.config import ChunkConfig
from fsku.chunking.extract import Element, ExtractError, extract_pdf
from fsku.chunking.split import article_title, split_spans

log = logging.getLogger(__name__)


@dataclass
class Unit:
    section: str
    title: str | None = None  # statute article title, repeated on continuation chunks
    parts: list[str] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)

    def add(self, text: str, page: int) -> None:
        self.parts.append(text)
        self.pages.append(page)


def build_units(elements: list[Element]) -> tuple[str, list[Unit]]:
    """Group elements into units; returns the document title and the units."""
    doc_title = ""
    if elements and elements[0].kind == "heading" and elements[0].level == 1:
        doc_title, elements = elements[0].text, elements[1:]
    statute = sum(1 for e in elements if e.kind == "text" and article_title(e.text)) >= 2
    path: dict[int, str] = {}
    units: list[Unit] = []
    cur: Unit | None = None

    def section() -> str:
        return " > ".join(path[k] for k in sorted(path))

    for el in elements:
        if el.kind == "heading":
            for k in [k for k in path if k >= el.level]:
                del path[k]
            path[el.level] = el.text
            cur = Unit(section())
            if not statute:
                cur.add(el.text, el.page)
            units.append(cur)
            continue
        title = article_title(el.text) if statute and el.kind == "text" else None
        if title:
            cur = Unit(" > ".join(filter(None, [section(), title])), title=title)
            units.append(cur)
        elif cur is None:
            cur = Unit(section())
            units.append(cur)
        cur.add(el.text, el.page)
    # a heading with nothing under it adds nothing on its own
    units = [u for u in units if u.parts and not (len(u.parts) == 1 and u.parts[0] == u.section.split(" > ")[-1])]
    return doc_title, units


def chunk_id(source: str, position: int, text: str) -> str:
    return hashlib.sha256(f"{source}\x00{position}\x00{text}".encode()).hexdigest()[:16]


def chunk_units(units: list[Unit], source: str, doc_title: str, cfg: ChunkConfig,
                length: Callable[[str], int]) -> list[dict]:
    rows: list[dict] = []
    for unit in units:
        text = "\n".join(unit.parts)
        starts, pos = [], 0
        for part in unit.parts:
            starts.append(pos)
            pos += len(part) + 1
        prefix = f"{unit.title}\n" if unit.title else ""
        budget = cfg.size - (length(prefix) if prefix else 0)
        if length(text) <= cfg.size:
            spans = [(0, len(text))]
        else:
            spans = split_spans(text, max(1, budget), min(cfg.overlap, max(0, budget - 1)), length)
        for s, e in spans:
            piece = text[s:e]
            if unit.title and s > 0:
                piece = prefix + piece
            if len(piece) < cfg.min_chars:
                continue
            page = unit.pages[max(i for i, st in enumerate(starts) if st <= s)]
            position = len(rows)
            row = {"chunk_id": chunk_id(source, position, piece), "source": source, "title": doc_title,
                   "page": page, "section": unit.section, "position": position, "text": piece,
                   "n_chars": len(piece)}
            if cfg.unit == "tokens":
                row["n_tokens"] = length(piece)
            rows.append(row)
    return rows


def make_length(cfg: ChunkConfig) -> Callable[[str], int]:
    if cfg.unit == "chars":
        return len
    from tokenizers import Tokenizer

    path = Path(cfg.tokenizer)
    if path.is_file():
        tok = Tokenizer.from_file(str(path))
    elif (path / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    else:  # a hub name, for users with a hub
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(cfg.tokenizer).backend_tokenizer
    return lambda s: len(tok.encode(s, add_special_tokens=False).ids)


def chunk_corpus(corpus_dir: str | Path, cfg: ChunkConfig) -> tuple[list[dict], dict]:
    """Chunk every PDF under ``corpus_dir``; unreadable files are skipped and reported.

    Raises ValueError when no document yields text.
    """
    corpus_dir = Path(corpus_dir)
    files = sorted(p for p in corpus_dir.rglob("*") if p.is_file() and p.suffix.lower() == ".pdf")
    length = make_length(cfg)
    rows: list[dict] = []
    skipped: list[dict] = []
    n_docs = n_pages = 0
    for path in files:
        source = path.relative_to(corpus_dir).as_posix()
        try:
            elements, pages = extract_pdf(path)
        except ExtractError as e:
            log.warning("skipping %s: %s", source, e)
            skipped.append({"file": source, "reason": str(e)})
            continue
        title, units = build_units(elements)
        doc_rows = chunk_units(units, source, title, cfg, length)
        if not doc_rows:
            log.warning("skipping %s: no text after cleaning", source)
            skipped.append({"file": source, "reason": "no text after cleaning"})
            continue
        n_docs += 1
        n_pages += pages
        rows += doc_rows
    if not rows:
        detail = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped) or "no .pdf files"
        raise ValueError(f"no document in {corpus_dir} yielded text ({detail})")
    lengths = np.array([r["n_chars"] for r in rows])
    metrics = {
        "documents": n_docs,
        "pages": n_pages,
        "chunks": len(rows),
        "mean_chars": round(float(lengths.mean()), 1),
        "p95_chars": round(float(np.percentile(lengths, 95)), 1),
        "max_chars": int(lengths.max()),
        "files_skipped": len(skipped),
        "skipped": skipped,
    }
    if cfg.unit == "tokens":
        toks = np.array([r["n_tokens"] for r in rows])
        metrics.update(mean_tokens=round(float(toks.mean()), 1), p95_tokens=round(float(np.percentile(toks, 95)), 1))
    return rows, metrics
