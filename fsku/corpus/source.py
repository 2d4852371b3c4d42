"""Parse the corpus source markup (see ``data/raw/corpus_src/FORMAT.md``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ITEM_RE = re.compile(r"^(\d{1,2}\.|[가-하]\.|\(\d{1,2}\)|[①-⑳])\s")


@dataclass
class Block:
    kind: str  # heading | para | item | bullet | table | columns | pagebreak
    text: str = ""
    level: int = 0  # heading level, or indent level for items
    rows: list[list[str]] = field(default_factory=list)
    children: list[Block] = field(default_factory=list)


@dataclass
class SourceDoc:
    name: str
    title: str
    kind: str
    header: str
    blocks: list[Block]


def _indent_level(line: str) -> int:
    if re.match(r"^[①-⑳]", line):
        return 0
    if re.match(r"^\d{1,2}\.\s", line):
        return 1
    return 2  # 가. / (1)


def parse_body(lines: list[str], where: str) -> list[Block]:
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        lineno = i + 1
        i += 1
        if not line.strip():
            continue
        if line.strip() == "[[pagebreak]]":
            blocks.append(Block("pagebreak"))
        elif line.strip() == "[[columns]]":
            inner = []
            while i < len(lines) and lines[i].strip() != "[[/columns]]":
                inner.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ValueError(f"{where}:{lineno}: [[columns]] without [[/columns]]")
            i += 1
            blocks.append(Block("columns", children=parse_body(inner, where)))
        elif line.startswith("## "):
            blocks.append(Block("heading", line[3:].strip(), level=2))
        elif line.startswith("# "):
            blocks.append(Block("heading", line[2:].strip(), level=1))
        elif line.lstrip().startswith("|"):
            rows = []
            i -= 1
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells):  # skip markdown rule rows
                    rows.append(cells)
                i += 1
            blocks.append(Block("table", rows=rows))
        elif line.startswith("- "):
            blocks.append(Block("bullet", line[2:].strip(), level=1))
        elif ITEM_RE.match(line.strip()):
            blocks.append(Block("item", line.strip(), level=_indent_level(line.strip())))
        else:
            blocks.append(Block("para", line.strip()))
    return blocks


def parse_source(path: str | Path) -> SourceDoc:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    head, sep, body = text.partition("\n---\n")
    if not sep:
        raise ValueError(f"{path}: missing '---' line between the header and the body")
    meta = {}
    for lineno, line in enumerate(head.splitlines(), 1):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon or key.strip() not in ("title", "kind", "header"):
            raise ValueError(f"{path}:{lineno}: expected 'title:', 'kind:' or 'header:', got {line!r}")
        meta[key.strip()] = value.strip()
    for key in ("title", "kind"):
        if key not in meta:
            raise ValueError(f"{path}: header lacks '{key}:'")
    if meta["kind"] not in ("statute", "guideline"):
        raise ValueError(f"{path}: kind must be statute or guideline, got {meta['kind']!r}")
    return SourceDoc(path.stem, meta["title"], meta["kind"], meta.get("header", meta["title"]),
                     parse_body(body.splitlines(), str(path)))


def body_text(path: str | Path) -> str:
    """The plain text of a source (markup removed), for checking labelled passages."""
    def walk(blocks: list[Block]) -> list[str]:
        out = []
        for b in blocks:
            if b.kind == "table":
                out += [" | ".join(r) for r in b.rows]
            elif b.kind == "columns":
                out += walk(b.children)
            elif b.text:
                out.append(b.text)
        return out
    return "\n".join(walk(parse_source(path).blocks))
