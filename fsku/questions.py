"""FSKU question files: reading, checking, and telling multiple choice from open-ended.

A multiple-choice question is a stem followed by two or more option lines ``N text`` whose numbers
run 1, 2, 3, ... (4 or 5 in the competition; 2 to 9 accepted). Anything else is open-ended. CRLF
line ends and stray spaces are tolerated; a numbered line inside quoted text (a quoted statute, for
instance) is not an option unless the run of numbers reaches the end of the question.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

OPTION_RE = re.compile(r"^\s*([1-9])\s+(\S.*?)\s*$")
MAX_OPTIONS = 9


@dataclass
class Question:
    id: str
    text: str
    stem: str
    options: list[str] = field(default_factory=list)
    answer: str = ""
    keywords: list[str] = field(default_factory=list)
    domain: str = ""

    @property
    def is_mcq(self) -> bool:
        return len(self.options) >= 2


def parse_question(text: str) -> tuple[str, list[str]]:
    """(stem, options); options is empty for an open-ended question."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").strip().split("\n")
    # options are the trailing run of lines numbered 1..n (n >= 2)
    options: list[str] = []
    i = len(lines)
    while i > 0:
        m = OPTION_RE.match(lines[i - 1])
        if not m:
            break
        options.insert(0, m.group(2))
        i -= 1
        numbers = list(range(1, len(options) + 1))
        first = int(OPTION_RE.match(lines[i]).group(1))
        if first == 1 and _consecutive(lines[i:], numbers):
            stem = "\n".join(lines[:i]).strip()
            if len(options) >= 2 and stem:
                return stem, options
    return "\n".join(lines).strip(), []


def _consecutive(lines: list[str], numbers: list[int]) -> bool:
    return [int(OPTION_RE.match(x).group(1)) for x in lines] == numbers


def read_csv_rows(path: str | Path, required: tuple[str, ...]) -> list[dict]:
    """Rows of a UTF-8 CSV (a BOM is accepted); errors name the file, row and column."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 (byte {e.start}); save the file as UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'})")
    reader.fieldnames = header
    rows = []
    for lineno, row in enumerate(reader, 2):
        if None in row:
            raise ValueError(f"{path}: row {lineno}: more fields than the header has")
        rows.append({k: (v or "") for k, v in row.items()})
    return rows


def load_questions(path: str | Path, max_chars: int = 20_000) -> list[Question]:
    """Questions from ``ID, Question`` (+ optional ``Answer``, ``Keyword``) CSV."""
    rows = read_csv_rows(path, ("ID", "Question"))
    out, seen = [], set()
    for lineno, row in enumerate(rows, 2):
        qid, text = row["ID"].strip(), row["Question"].strip()
        if not qid:
            raise ValueError(f"{path}: row {lineno}, column ID: empty")
        if qid in seen:
            raise ValueError(f"{path}: row {lineno}, column ID: duplicate ID {qid}")
        if not text:
            raise ValueError(f"{path}: row {lineno}, column Question: empty question")
        if len(text) > max_chars:
            raise ValueError(f"{path}: row {lineno}, column Question: {len(text)} characters (limit {max_chars})")
        seen.add(qid)
        stem, options = parse_question(text)
        if len(options) > MAX_OPTIONS:  # pragma: no cover - OPTION_RE allows 1..9 only
            raise ValueError(f"{path}: row {lineno}: more than {MAX_OPTIONS} options")
        keywords = [k.strip() for k in row.get("Keyword", "").split(",") if k.strip()]
        out.append(Question(qid, text, stem, options, row.get("Answer", "").strip(), keywords,
                            row.get("Domain", "").strip()))
    if not out:
        raise ValueError(f"{path}: no questions")
    return out


def load_answered(paths: list[str | Path]) -> list[Question]:
    """Questions with answers to score against, from one or more FSKU files (``ID, Question, Answer[,
    Keyword]``): the scorer's and the eval stage's gold. An ID in two files, or a question without
    its Answer, is an error naming them."""
    out, where = [], {}
    for path in paths:
        for question in load_questions(path):
            if question.id in where:
                raise ValueError(f"{path}: ID {question.id} is also in {where[question.id]}; IDs must be unique")
            where[question.id] = path
            out.append(question)
        missing = [x.id for x in out if where[x.id] == path and not x.answer]
        if missing:
            raise ValueError(f"{path}: no Answer to score against for {', '.join(missing[:5])}")
    return out
