"""How close the student is to the teacher on held-out teacher answers: token KL(teacher || student)
over response tokens, and the perplexity of each model on those answers.

The teacher's side of that comparison does not depend on the student: ``teacher_states`` computes
it once (the teacher's last hidden states at the positions that predict each answer token) and
``answer_quality`` then needs only the teacher's LM head (``fsku.distill.head.Head``), not another
pass of the teacher, for every model compared with it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from fsku.distill.head import Head, head_of
from fsku.distill.losses import label_logprobs, response_chunks


@dataclass(frozen=True)
class TeacherStates:
    """Per answer: the token ids the teacher read (prompt + answer, EOS included, cut to the maximum
    length) and its last hidden states at the positions that predict the answer's tokens (answer
    tokens x hidden size), with the LM head that turns them into its logits."""
    ids: list[list[int]]
    hidden: list[torch.Tensor]
    head: Head

    @cached_property
    def by_ids(self) -> dict[tuple[int, ...], torch.Tensor]:
        return {tuple(i): h for i, h in zip(self.ids, self.hidden)}

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """float32 logits of the teacher at the stored positions."""
        return self.head.logits(hidden, torch.float32)[0]


@torch.no_grad()
def teacher_states(teacher, examples: list[dict], tokenizer, max_length: int) -> TeacherStates:
    """The teacher's side of ``answer_quality`` for ``examples``: every sequence it reads there, with
    the student's tokenizer (its ``teacher_prompt`` or the prompt, then the answer as the student's
    cut left it) and with its own (``teacher_tokenizer``: its prompt and the answer cut to
    ``max_length``). Usually the two are the same sequences; each runs once, one a pass."""
    device = next(teacher.parameters()).device
    decoder = teacher.get_decoder() if hasattr(teacher, "get_decoder") else teacher.base_model
    answers: dict[tuple[int, ...], int] = {}
    for ids, n in [(t, len(t) - len(a)) for _, a, t in _pairs(examples, tokenizer, max_length)] + \
            _rows_as_read(examples, tokenizer, max_length, "teacher_prompt"):
        answers[tuple(ids)] = max(answers.get(tuple(ids), 0), len(ids) - n)
    ids_out, hidden = [], []
    for ids, a in answers.items():
        h = decoder(input_ids=torch.tensor([ids], device=device), use_cache=False).last_hidden_state
        ids_out.append(list(ids))
        hidden.append(h[0, len(ids) - 1 - a:len(ids) - 1].float().cpu())
    return TeacherStates(ids_out, hidden, head_of(teacher))


def save_teacher_states(states: TeacherStates, path: str | Path) -> None:
    """One safetensors file: every answer's ids and hidden states, concatenated, with their lengths."""
    from safetensors.torch import save_file

    from fsku.io import atomic_path

    tensors = {"ids": torch.tensor([t for ids in states.ids for t in ids], dtype=torch.int32),
               "lengths": torch.tensor([len(ids) for ids in states.ids], dtype=torch.int32),
               "answer_lengths": torch.tensor([len(h) for h in states.hidden], dtype=torch.int32),
               "hidden": torch.cat(states.hidden) if states.hidden else torch.zeros(0, 0)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def load_teacher_states(path: str | Path, teacher) -> TeacherStates:
    """``save_teacher_states``' file, with the LM head of the loaded ``teacher``."""
    from safetensors.torch import load_file

    t = load_file(str(path))
    ids = t["ids"].tolist()
    cuts = torch.tensor([0, *t["lengths"].tolist()]).cumsum(0).tolist()
    head = head_of(teacher)
    if t["hidden"].numel() and t["hidden"].shape[-1] != head.weight.shape[-1]:
        raise ValueError(f"{path}: hidden size {t['hidden'].shape[-1]}, but the teacher's LM head takes "
                         f"{head.weight.shape[-1]}: states of another teacher; rerun its row")
    return TeacherStates([ids[a:b] for a, b in zip(cuts, cuts[1:])],
                         list(t["hidden"].split(t["answer_lengths"].tolist())), head)


def first_missing(states: TeacherStates, examples: list[dict], tokenizer, max_length: int,
                  teacher_tokenizer=None) -> int | None:
    """The index of the first answer ``answer_quality`` would need that ``states`` lacks, else None."""
    if teacher_tokenizer is not None:
        wanted = [(ids, len(ids) - n) for ids, n in _rows_as_read(examples, teacher_tokenizer, max_length,
                                                                  "teacher_prompt")]
    else:
        wanted = [(t, len(a)) for _, a, t in _pairs(examples, tokenizer, max_length)]
    return next((i for i, (ids, a) in enumerate(wanted) if len(states.by_ids.get(tuple(ids), ())) < a), None)


@torch.no_grad()
def answer_quality(student, teacher, examples: list[dict], tokenizer, max_length: int, chunk: int = 128,
                   teacher_tokenizer=None, batch_size: int = 1) -> dict:
    """``examples``: {"prompt": formatted prompt, "chosen": teacher answer, and optionally
    "teacher_prompt": the prompt as the teacher reads it (its own system prompt)}. Returns mean
    per-token KL(p_teacher || q_student), student and teacher perplexity on the answers, and the
    token count. With a ``teacher_tokenizer`` of another vocabulary there is no token-level KL
    (``kl`` None), and each model's perplexity is over its own tokens of the answers.

    ``teacher``: the model, or its ``TeacherStates`` for these examples (``first_missing`` says
    whether they cover them). ``batch_size`` examples go through each model at once, left-padded so
    that every answer ends at the last position and only the answers' logits are kept (batch 1: no
    padding at all)."""
    if teacher_tokenizer is not None:
        s, n = _answer_nll(student, examples, tokenizer, max_length, chunk, "prompt", batch_size)
        t, m = _answer_nll(teacher, examples, teacher_tokenizer, max_length, chunk, "teacher_prompt", batch_size)
        return {"kl": None, "student_ppl": round(math.exp(s / n), 3), "teacher_ppl": round(math.exp(t / m), 3),
                "tokens": n}
    kl_sum = nll_s = nll_t = 0.0
    tokens = 0
    rows = _pairs(examples, tokenizer, max_length)
    for b in range(0, len(rows), batch_size):
        batch = rows[b:b + batch_size]
        keep = max(len(a) for _, a, _ in batch) + 1
        s_all = _answer_logits(student, [ids for ids, _, _ in batch], keep, tokenizer.pad_token_id)
        t_ans = _teacher_logits(teacher, [t for _, _, t in batch], [len(a) for _, a, _ in batch], keep,
                                tokenizer.pad_token_id)
        for i, (_, answer, _) in enumerate(batch):
            a = len(answer)  # the logits at kept positions keep-1-a .. keep-2 predict the answer's tokens
            s, t = s_all[i, keep - 1 - a:keep - 1], t_ans[i]
            target = torch.tensor(answer, device=s.device)
            for _, c, e in response_chunks(torch.ones(1, a, dtype=torch.bool), chunk):
                ls = torch.log_softmax(s[c:e], -1)
                lt = torch.log_softmax(t[c:e].to(ls.device), -1)
                kl_sum += float((lt.exp() * (lt - ls)).sum())
                nll_s -= float(ls.gather(-1, target[c:e, None]).sum())
                nll_t -= float(lt.gather(-1, target[c:e, None]).sum())
            tokens += a
    if not tokens:
        raise ValueError("no answer tokens to measure (empty test pairs, or every answer truncated away)")
    return {"kl": round(kl_sum / tokens, 4), "student_ppl": round(math.exp(nll_s / tokens), 3),
            "teacher_ppl": round(math.exp(nll_t / tokens), 3), "tokens": tokens}


def _pairs(examples: list[dict], tokenizer, max_length: int) -> list[tuple[list[int], list[int], list[int]]]:
    """(student ids, answer ids, teacher ids) per measurable example: prompt + answer + EOS cut to
    ``max_length``; examples whose answer is cut away entirely are left out."""
    rows = []
    for ex in examples:
        prompt = tokenizer(ex["prompt"]).input_ids
        answer = tokenizer(ex["chosen"] + (tokenizer.eos_token or ""), add_special_tokens=False).input_ids
        ids = (prompt + answer)[:max_length]
        if len(ids) > len(prompt):
            t_prompt = tokenizer(ex["teacher_prompt"]).input_ids if "teacher_prompt" in ex else prompt
            rows.append((ids, ids[len(prompt):], t_prompt + ids[len(prompt):]))
    return rows


def _rows_as_read(examples: list[dict], tokenizer, max_length: int, prompt_key: str) -> list[tuple[list[int], int]]:
    """(ids, prompt length) per measurable example as one model reads it with its own tokenizer:
    the prompt under ``prompt_key`` (else "prompt"), the answer and EOS, cut to ``max_length``."""
    rows = []
    for ex in examples:
        prompt = tokenizer(ex.get(prompt_key, ex["prompt"])).input_ids
        answer = tokenizer(ex["chosen"] + (tokenizer.eos_token or ""), add_special_tokens=False).input_ids
        ids = (prompt + answer)[:max_length]
        if len(ids) > len(prompt):
            rows.append((ids, len(prompt)))
    return rows


def _teacher_logits(teacher, seqs: list[list[int]], answers: list[int], keep: int, pad_id) -> list[torch.Tensor]:
    """The teacher's float32 logits at each sequence's answer positions (answers[i] x vocabulary)."""
    if isinstance(teacher, TeacherStates):
        return [teacher.logits(teacher.by_ids[tuple(s)][-a:]) for s, a in zip(seqs, answers)]
    t_all = _answer_logits(teacher, seqs, keep, pad_id)
    return [t_all[i, keep - 1 - a:keep - 1] for i, a in enumerate(answers)]


def _answer_logits(model, seqs: list[list[int]], keep: int, pad_id: int | None) -> torch.Tensor:
    """float32 logits of the last ``keep`` positions of each sequence, left-padded into one batch."""
    device = next(model.parameters()).device
    if len(seqs) == 1:  # nothing to pad: the unpadded call, exactly
        x = torch.tensor(seqs, device=device)
        return model(input_ids=x, use_cache=False, logits_to_keep=keep).logits.float()
    width = max(len(q) for q in seqs)
    x = torch.tensor([[pad_id or 0] * (width - len(q)) + q for q in seqs], device=device)
    mask = torch.tensor([[0] * (width - len(q)) + [1] * len(q) for q in seqs], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=x, attention_mask=mask, position_ids=positions, use_cache=False,
                 logits_to_keep=keep).logits.float()


def _answer_nll(model, examples: list[dict], tokenizer, max_length: int, chunk: int, prompt_key: str,
                batch_size: int = 1):
    """(summed NLL, token count) of the answers (EOS included) under ``model`` (or its
    ``TeacherStates``) with its own tokenizer."""
    nll = 0.0
    tokens = 0
    rows = [(ids, ids[n:]) for ids, n in _rows_as_read(examples, tokenizer, max_length, prompt_key)]
    for b in range(0, len(rows), batch_size):
        batch = rows[b:b + batch_size]
        keep = max(len(a) for _, a in batch) + 1
        logits = _teacher_logits(model, [ids for ids, _ in batch], [len(a) for _, a in batch], keep,
                                 tokenizer.pad_token_id)
        for i, (_, answer) in enumerate(batch):
            targets = torch.tensor([answer], device=logits[i].device)
            nll -= float(label_logprobs(logits[i][None], targets, chunk).sum())
            tokens += len(answer)
    if not tokens:
        raise ValueError("no answer tokens to measure (empty test pairs, or every answer truncated away)")
    return nll, tokens
