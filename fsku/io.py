"""Atomic, deterministic file output.

Every out is written to a temporary sibling and renamed into place, so a killed stage leaves
either the previous out or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_sibling(path: Path, is_dir: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed earlier run
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    if is_dir:
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outs get the usual mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces the directory ``path`` whole."""
    path = Path(path)
    tmp = _tmp_sibling(path, is_dir=True)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def dumps_json(obj: Any) -> str:
    """Stable JSON: fixed key order as given, UTF-8 text, trailing newline."""
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, dumps_json(obj))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {e}") from None
    return rows


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# tokenizer_config.json keys that record how a tokenizer was loaded, not what it is: transformers
# writes `local_files_only: true` when HF_HUB_OFFLINE is set, which would make the same model's
# out differ between an offline and an online run
_LOAD_TIME_KEYS = ("local_files_only",)


def save_tokenizer(tokenizer, out_dir: str | Path) -> None:
    """``tokenizer.save_pretrained`` without the load-time keys, so outs do not depend on the env."""
    for key in _LOAD_TIME_KEYS:
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.save_pretrained(str(out_dir))


_TOKENIZERS: dict[str, object] = {}


def cached_tokenizer(source: str | Path):
    """``AutoTokenizer.from_pretrained(source)``, parsed once per process for each tokenizer content:
    an eval row reads its own model's, then the teacher's, then its own again, and distill the
    student's and the teacher's, usually the very same 262,144-token tokenizer (seconds a load). Each
    caller gets a shallow copy: its own chat template and padding side; the parsed vocabulary and the
    special tokens are shared (the pad token is set only to the EOS token, the same way by every
    caller, and only where the tokenizer has none)."""
    import copy
    import hashlib

    from transformers import AutoTokenizer

    if not Path(source).is_dir():  # a hub id: the hub's own cache
        return AutoTokenizer.from_pretrained(str(source))
    digest = hashlib.sha256()
    for f in sorted(Path(source).glob("*")):
        if f.is_file() and (f.name.startswith(("tokenizer", "special_tokens", "chat_template", "added_tokens"))
                            or f.suffix in (".model", ".tiktoken")):
            digest.update(f.name.encode() + f.read_bytes())
    key = digest.hexdigest()
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = AutoTokenizer.from_pretrained(str(source))
    return copy.copy(_TOKENIZERS[key])
