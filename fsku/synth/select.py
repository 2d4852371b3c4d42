"""Which chunks the teacher writes from, and what it is asked for at each.

Questions are spread over documents (the same number from each) and, inside a document, over its
sections: sections are taken in turn, a seeded draw inside each, so a long chapter does not take
every question. Each task gets its kind (``open_share`` of them open-ended), its number of options
and the position its key will stand at, dealt in turn so the keys are spread evenly.
"""

from __future__ import annotations

import random
from collections import defaultdict


def select_chunks(chunks: list[dict], per_document: int, min_chars: int, seed: int) -> list[dict]:
    """Up to ``per_document`` chunks of at least ``min_chars`` characters from each document, in
    the chunks' order."""
    rng = random.Random(seed)
    docs: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for c in chunks:
        if len(c["text"]) >= min_chars:
            docs[c["source"]][(c.get("section") or "").split(" > ")[0]].append(c)
    picked = []
    for sections in docs.values():
        pools = [rng.sample(v, len(v)) for v in sections.values()]
        take: list[dict] = []
        while len(take) < per_document and any(pools):
            for pool in pools:
                if pool and len(take) < per_document:
                    take.append(pool.pop())
        picked += take
    order = {c["chunk_id"]: i for i, c in enumerate(chunks)}
    return sorted(picked, key=lambda c: order[c["chunk_id"]])


def plan(chunks: list[dict], open_share: float, five_option_share: float, seed: int) -> list[dict]:
    """One task per chunk: ``id``, ``kind``, ``n_options`` and the key's ``position``."""
    rng = random.Random(seed + 1)
    n = len(chunks)
    open_ids = set(rng.sample(range(n), round(n * open_share)))
    mcq = [i for i in range(n) if i not in open_ids]
    five = set(rng.sample(mcq, round(len(mcq) * five_option_share)))
    deck: dict[int, list[int]] = {4: [], 5: []}
    tasks = []
    for i, c in enumerate(chunks):
        task = {"id": f"SYNTH_{i:04d}", "chunk_id": c["chunk_id"], "kind": "open" if i in open_ids else "mcq"}
        if task["kind"] == "mcq":
            k = 5 if i in five else 4
            if not deck[k]:
                deck[k] = rng.sample(range(1, k + 1), k)
            task.update(n_options=k, position=deck[k].pop())
        tasks.append(task)
    return tasks
