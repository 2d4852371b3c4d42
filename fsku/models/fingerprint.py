"""The identity of a model, by content: what every resume check compares (generation shards, distill
checkpoints, the answer cache of eval and predict).

sha256 over each file's path (relative) and bytes, in name order: weights, config, tokenizer,
adapter. Names and sizes alone would let another model of the same shapes (another seed, retrained
weights) reuse stale partial outputs after a kill. Hashing reads the whole directory, about a second
per GB here (SHA extensions), once per stage. A hub id that is not a local directory is identified
by its name: the hub's revision cannot be known offline.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def model_fingerprint(model_dir: str | Path) -> str:
    path = Path(model_dir)
    h = hashlib.sha256()
    if not path.is_dir():
        h.update(f"hub:{model_dir}".encode())
        return h.hexdigest()[:16]
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(path).as_posix()}:{p.stat().st_size}\n".encode())
        with open(p, "rb") as f:
            while chunk := f.read(1 << 23):
                h.update(chunk)
    return h.hexdigest()[:16]
