"""The teacher's next-token distributions over the train pairs' answers, computed once and kept as a
DVC artifact (stage ``teacher_logits``), so that ``train.teacher_logits: cached`` trains without the
teacher in memory and without its forward pass on every step.

What is kept, per answer token (both answers of every pair): the teacher's k likeliest next tokens
(int32 ids) with their log-probabilities (float16), the log of the mass left over (float32, exact:
the logsumexp of every other token's log-probability) and the log-probability of the answer's own
token (float32; adaptive skews need it). Also the token ids of every sequence, so the trainer can
prove the cache is about the rows it trains on. One safetensors file, sequences in pair order
(pair 0 chosen, pair 0 rejected, pair 1 chosen, ...), positions flat with offsets.

The loss then compares the two distributions coarsened to the teacher's k tokens plus one bucket for
everything else (``fused.coarse``): the rest of the teacher's mass is kept as one outcome, not spread
over tokens it was never measured on. That divergence is a lower bound of the exact one and equals it
when the k tokens hold all the teacher's mass (``metrics/teacher_logits.json`` reports how much they hold).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from fsku.distill.fused import TopK
from fsku.distill.pair_tokens import pair_token_ids

FILE = "train.safetensors"
NOT_COMPUTED = "NOT_COMPUTED.txt"  # the stage's out when train.teacher_logits is online
SIDES = ("chosen", "rejected")


def sequences(tokenizer, examples: list[dict]) -> list[tuple[list[int], int]]:
    """(token ids, first answer token) of every trained row, in pair order: chosen, then rejected."""
    out = []
    for ex in examples:
        t = pair_token_ids(tokenizer, ex)
        out += [(t["prompt_ids"] + t[f"{side}_ids"], len(t["prompt_ids"])) for side in SIDES]
    return out


@torch.no_grad()
def compute(teacher, seqs: list[tuple[list[int], int]], k: int, batch_size: int = 4, pad_id: int = 0,
            chunk: int = 128) -> tuple[dict[str, torch.Tensor], dict]:
    """The cache's tensors for ``seqs`` and what they cover: a full forward per sequence (right-padded
    batches), the answer positions' log-softmax a chunk of ``chunk`` positions at a time."""
    vocab = teacher.get_output_embeddings().weight.shape[0]
    if not 1 <= k <= vocab:
        raise ValueError(f"teacher_logits.top_k: {k} must be between 1 and the teacher's vocabulary ({vocab})")
    device = next(teacher.parameters()).device
    parts: dict[str, list[torch.Tensor]] = {"ids": [], "logprobs": [], "rest": [], "label": []}
    hits = 0
    for b in range(0, len(seqs), batch_size):
        batch = seqs[b:b + batch_size]
        width = max(len(s) for s, _ in batch)
        first = min(n for _, n in batch) - 1  # logits from the earliest answer's predicting position on
        x = torch.tensor([s + [pad_id] * (width - len(s)) for s, _ in batch], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in batch], device=device)
        logits = teacher(input_ids=x, attention_mask=mask, use_cache=False, logits_to_keep=width - first).logits
        for i, (s, n) in enumerate(batch):
            for c in range(n - 1, len(s) - 1, chunk):  # position c predicts token c + 1
                e = min(c + chunk, len(s) - 1)
                lp = torch.log_softmax(logits[i, c - first:e - first].float(), -1)
                val, idx = lp.topk(k, -1)
                parts["ids"].append(idx.int().cpu())
                parts["logprobs"].append(val.half().cpu())
                parts["rest"].append(torch.logsumexp(lp.scatter(-1, idx, float("-inf")), -1).cpu())
                target = torch.tensor(s[c + 1:e + 1], device=lp.device)[:, None]
                parts["label"].append(lp.gather(-1, target)[:, 0].cpu())
                hits += int((idx == target).any(-1).sum())
        del logits
    lengths = [len(s) - n for s, n in seqs]
    tensors = {name: torch.cat(v) for name, v in parts.items()}
    tensors.update(tokens=torch.tensor([t for s, _ in seqs for t in s], dtype=torch.int32),
                   seq_offsets=torch.tensor(_offsets([len(s) for s, _ in seqs]), dtype=torch.int64),
                   starts=torch.tensor([n for _, n in seqs], dtype=torch.int32),
                   pos_offsets=torch.tensor(_offsets(lengths), dtype=torch.int64))
    held = 1 - tensors["rest"].double().exp()
    summary = {"sequences": len(seqs), "positions": int(sum(lengths)), "top_k": k, "vocab": vocab,
               "mass_in_top_k_mean": round(float(held.mean()), 4) if len(held) else None,
               "mass_in_top_k_p10": round(float(held.quantile(0.1)), 4) if len(held) else None,
               "answer_token_in_top_k": round(hits / len(held), 4) if len(held) else None}
    return tensors, summary


def _offsets(lengths: list[int]) -> list[int]:
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return out


def save(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, str(path / FILE),
              metadata={"fsku": json.dumps(meta, sort_keys=True)})


@dataclass
class TeacherCache:
    """A loaded cache, checked against the trainer's own tokenisation of the pairs."""
    path: Path
    t: dict[str, torch.Tensor]
    meta: dict

    @classmethod
    def load(cls, directory: Path) -> "TeacherCache":
        from safetensors import safe_open

        f = Path(directory) / FILE
        if not f.exists():
            why = " (it ran while train.teacher_logits was online)" if (Path(directory) / NOT_COMPUTED).exists() else ""
            raise FileNotFoundError(f"{f}: no cached teacher logits{why}; run the teacher_logits stage "
                                    "(dvc repro teacher_logits) or set train.teacher_logits: online")
        with safe_open(str(f), "pt") as h:
            meta = json.loads((h.metadata() or {}).get("fsku", "{}"))
            return cls(f, {k: h.get_tensor(k) for k in h.keys()}, meta)

    def sequence(self, i: int) -> tuple[list[int], int]:
        a, b = int(self.t["seq_offsets"][i]), int(self.t["seq_offsets"][i + 1])
        return self.t["tokens"][a:b].tolist(), int(self.t["starts"][i])

    def check(self, seqs: list[tuple[list[int], int]], pairs_file: str, vocab: int) -> None:
        """Refuse a cache that is not about these rows: another pair count, other token ids (another
        tokenizer, prompt format or pairs file) or another vocabulary; the first mismatch is named."""
        n_cached = len(self.t["starts"])
        if n_cached != len(seqs):
            raise ValueError(f"{self.path}: {n_cached // 2} pairs cached, {len(seqs) // 2} in {pairs_file}; "
                             "rerun the teacher_logits stage")
        if int(self.meta.get("vocab", vocab)) != vocab:
            raise ValueError(f"{self.path}: cached over a vocabulary of {self.meta.get('vocab')} tokens, the student "
                             f"has {vocab}; rerun the teacher_logits stage with this teacher")
        for i, (s, n) in enumerate(seqs):
            cached, start = self.sequence(i)
            if cached != s or start != n:
                at = next((j for j, (x, y) in enumerate(zip(cached, s)) if x != y), min(len(cached), len(s)))
                raise ValueError(f"{self.path}: pair {i // 2} (row {i // 2 + 1} of {pairs_file}), {SIDES[i % 2]} "
                                 f"answer: the cached token ids differ from the trainer's at token {at} "
                                 f"(answer starts at {start} cached, {n} now); the cache was made from other pairs "
                                 "or another tokenizer: rerun the teacher_logits stage")

    def index(self, max_length: int) -> dict[bytes, int]:
        """Sequence number by the digest of its tokens as the trainer's rows hold them (cut at max_length)."""
        return {_digest(self.sequence(i)[0][:max_length]): i for i in range(len(self.t["starts"]))}

    def batch(self, index: dict[bytes, int], input_ids: torch.Tensor, attention_mask: torch.Tensor,
              first: int) -> tuple[TopK, torch.Tensor]:
        """The cached top-k and answer-token log-probs for a batch's rows, at the positions the loss
        reads (``first`` on; position p predicts token p + 1), zeros elsewhere."""
        n, width = input_ids.shape[0], input_ids.shape[1] - first
        k = self.t["ids"].shape[1]
        ids = torch.zeros(n, width, k, dtype=torch.int32)
        lps = torch.zeros(n, width, k, dtype=torch.float32)
        rest = torch.zeros(n, width, dtype=torch.float32)
        label = torch.zeros(n, width, dtype=torch.float32)
        for r in range(n):
            length = int(attention_mask[r].sum())
            key = _digest(input_ids[r, :length].tolist())
            if key not in index:
                raise ValueError(f"{self.path}: a training row has no cached teacher logits (its tokens match no "
                                 "cached sequence); rerun the teacher_logits stage")
            i = index[key]
            start, p0 = int(self.t["starts"][i]), int(self.t["pos_offsets"][i])
            count = length - start  # answer tokens the row keeps
            dst = slice(start - 1 - first, start - 1 - first + count)
            src = slice(p0, p0 + count)
            ids[r, dst], lps[r, dst] = self.t["ids"][src], self.t["logprobs"][src].float()
            rest[r, dst], label[r, dst] = self.t["rest"][src], self.t["label"][src]
        dev = input_ids.device
        return TopK(ids.to(dev), lps.to(dev), rest.to(dev)), label.to(dev)


def _digest(tokens: list[int]) -> bytes:
    return hashlib.sha1(torch.tensor(tokens, dtype=torch.int32).numpy().tobytes()).digest()
