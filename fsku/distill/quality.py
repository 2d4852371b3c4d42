"""How close the student is to the teacher on held-out teacher answers: token KL(teacher || student)
over response tokens, and the perplexity of each model on those answers."""

from __future__ import annotations

import math

import torch

from fsku.distill.losses import label_logprobs


@torch.no_grad()
def answer_quality(student, teacher, examples: list[dict], tokenizer, max_length: int, chunk: int = 128,
                   teacher_tokenizer=None, batch_size: int = 1) -> dict:
    """``examples``: {"prompt": formatted prompt, "chosen": teacher answer, and optionally
    "teacher_prompt": the prompt as the teacher reads it (its own system prompt)}. Returns mean
    per-token KL(p_teacher || q_student), student and teacher perplexity on the answers, and the
    token count. With a ``teacher_tokenizer`` of another vocabulary there is no token-level KL
    (``kl`` None), and each model's perplexity is over its own tokens of the answers.

    ``batch_size`` examples go through each model at once, left-padded so that every answer ends
    at the last position and only the answers' logits are kept (batch 1: no padding at all)."""
    if teacher_tokenizer is not None:
        s, n = _answer_nll(student, examples, tokenizer, max_length, chunk, "prompt", batch_size)
        t, m = _answer_nll(teacher, examples, teacher_tokenizer, max_length, chunk, "teacher_prompt", batch_size)
        return {"kl": None, "student_ppl": round(math.exp(s / n), 3), "teacher_ppl": round(math.exp(t / m), 3),
                "tokens": n}
    kl_sum = nll_s = nll_t = 0.0
    tokens = 0
    rows = []
    for ex in examples:
        prompt = tokenizer(ex["prompt"]).input_ids
        answer = tokenizer(ex["chosen"] + (tokenizer.eos_token or ""), add_special_tokens=False).input_ids
        ids = (prompt + answer)[:max_length]
        if len(ids) > len(prompt):
            t_prompt = tokenizer(ex["teacher_prompt"]).input_ids if "teacher_prompt" in ex else prompt
            rows.append((ids, ids[len(prompt):], t_prompt + ids[len(prompt):]))
    for b in range(0, len(rows), batch_size):
        batch = rows[b:b + batch_size]
        keep = max(len(a) for _, a, _ in batch) + 1
        s_all = _answer_logits(student, [ids for ids, _, _ in batch], keep, tokenizer.pad_token_id)
        t_all = _answer_logits(teacher, [t for _, _, t in batch], keep, tokenizer.pad_token_id)
        for i, (_, answer, _) in enumerate(batch):
            a = len(answer)  # the logits at kept positions keep-1-a .. keep-2 predict the answer's tokens
            s, t = s_all[i, keep - 1 - a:keep - 1], t_all[i, keep - 1 - a:keep - 1]
            target = torch.tensor(answer, device=s.device)
            for c in range(0, a, chunk):
                ls = torch.log_softmax(s[c:c + chunk], -1)
                lt = torch.log_softmax(t[c:c + chunk], -1)
                kl_sum += float((lt.exp() * (lt - ls)).sum())
                nll_s -= float(ls.gather(-1, target[c:c + chunk, None]).sum())
                nll_t -= float(lt.gather(-1, target[c:c + chunk, None]).sum())
            tokens += a
    if not tokens:
        raise ValueError("no answer tokens to measure (empty test pairs, or every answer truncated away)")
    return {"kl": round(kl_sum / tokens, 4), "student_ppl": round(math.exp(nll_s / tokens), 3),
            "teacher_ppl": round(math.exp(nll_t / tokens), 3), "tokens": tokens}


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
    """(summed NLL, token count) of the answers (EOS included) under ``model`` with its own tokenizer."""
    nll = 0.0
    tokens = 0
    rows = []
    for ex in examples:
        prompt = tokenizer(ex.get(prompt_key, ex["prompt"])).input_ids
        answer = tokenizer(ex["chosen"] + (tokenizer.eos_token or ""), add_special_tokens=False).input_ids
        ids = (prompt + answer)[:max_length]
        if len(ids) > len(prompt):
            rows.append((ids, ids[len(prompt):]))
    for b in range(0, len(rows), batch_size):
        batch = rows[b:b + batch_size]
        keep = max(len(a) for _, a in batch) + 1
        logits = _answer_logits(model, [ids for ids, _ in batch], keep, tokenizer.pad_token_id)
        for i, (_, answer) in enumerate(batch):
            a = len(answer)
            targets = torch.tensor([answer], device=logits.device)
            nll -= float(label_logprobs(logits[i:i + 1, keep - 1 - a:keep - 1], targets, chunk).sum())
            tokens += a
    if not tokens:
        raise ValueError("no answer tokens to measure (empty test pairs, or every answer truncated away)")
    return nll, tokens
