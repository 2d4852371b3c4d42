"""Text cleaning for extracted PDF text: mojibake, width forms, whitespace, line joins, money.

Unicode is normalised to NFC only: NFKC would turn circled paragraph numbers (①) and other
compatibility characters that carry meaning in Korean statutes into plain digits. Full-width ASCII
forms are mapped to ASCII explicitly instead.
"""

from __future__ import annotations

import re

import ftfy

_FULLWIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}
_FULLWIDTH.update({0x3000: 0x20, 0x3002: ord("."), 0x3001: ord(","), 0xFF5E: ord("~"),
                   0x2024: ord("."), 0x2027: ord("·")})
_INVISIBLE = {cp: None for cp in (0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD)}
_SPACES = {cp: 0x20 for cp in (0x00A0, 0x2002, 0x2003, 0x2009, 0x202F, 0x205F, 0x0009)}

_HYPHEN_BREAK = re.compile(r"([A-Za-z])-$")
_MULTISPACE = re.compile(r"[ ]{2,}")
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.;:!?%)\]])")

# money: "1,000 만원" / "1000만 원" / "3억원" / "₩5000" -> "1,000만 원", "3억 원", "5,000원"
_WON_PREFIX = re.compile(r"(?:₩|KRW)\s?(\d[\d,]*(?:\.\d+)?)")
_MAGNITUDE = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s+(천|만|억|조)(?=\s*(?:천|만|억|조|원))")
_MAG_WON = re.compile(r"(천|만|억|조)\s*원")
_DIGIT_WON = re.compile(r"(\d)\s+원")
_BIG_NUMBER = re.compile(r"(?<![\d.,])(\d{4,})(?=\s*(?:천|만|억|조)?\s*원)")


def _group_digits(m: re.Match) -> str:
    return f"{int(m.group(1)):,}"


def normalize_money(text: str) -> str:
    """Consistent Korean money forms: digits grouped, unit attached, a space before 원 after 만/억/조."""
    text = _WON_PREFIX.sub(lambda m: f"{m.group(1)}원", text)
    text = _BIG_NUMBER.sub(_group_digits, text)
    text = _MAGNITUDE.sub(r"\1\2", text)
    text = _MAG_WON.sub(r"\1 원", text)
    return _DIGIT_WON.sub(r"\1원", text)


def clean_text(text: str) -> str:
    """Clean one paragraph (no newlines expected inside)."""
    text = ftfy.fix_text(text, normalization="NFC")
    text = text.translate(_INVISIBLE).translate(_SPACES).translate(_FULLWIDTH)
    text = _MULTISPACE.sub(" ", text).strip()
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return normalize_money(text)


def join_lines(lines: list[str]) -> str:
    """Join the wrapped lines of one paragraph.

    A Latin word hyphenated across a line break is rejoined ("infor-" + "mation"); otherwise the
    break stood where a space was (Korean is wrapped at word boundaries), so lines join with one
    space.
    """
    out = ""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if not out:
            out = line
        elif _HYPHEN_BREAK.search(out) and line[:1].islower():
            out = out[:-1] + line
        else:
            out = f"{out} {line}"
    return out
