"""How close the student is to the teacher on held-out teacher answers: token KL(teacher || student)
over response tokens, and the perplexity of each model on those answers."""

from __future__ import annotations

import math

import torch

from fsku.distill.losses import IGNORE, label_logprobs


@torch.no_grad()
def answer_quality(student, teacher, examples: list[dict], tokenizer, max_length: int, chunk: int = 128,
                   teacher_tokenizer=None) -> dict:
    """``examples``: {"prompt": formatted prompt, "chosen": teacher answer, and optionally
    "teacher_prompt": the prompt as the teacher reads it (its own system prompt)}. Returns mean
    per-token KL(p_teacher || q_student), student and teacher perplexity on the answers, and the
    token count. With a ``teacher_tokenizer`` of another vocabulary there is no token-level KL
    (``kl`` None), and each model's perplexity is over its own tokens of the answers."""
    if teacher_tokenizer is not None:
        s, n = _answer_nll(student, examples, tokenizer, max_length, chunk, "prompt")
        t, m = _answer_nll(teacher, examples, teacher_tokenizer, max_length, chunk, "teacher_prompt")
        return {"kl": None, "student_ppl": round(math.exp(s / n), 3), "teacher_ppl": round(math.exp(t / m), 3),
                "tokens": n}
    kl_sum = nll_s = nll_t = 0.0
    tokens = 0
    device = next(student.parameters()).device
    for ex in examples:
        prompt = tokenizer(ex["prompt"]).input_ids
        answer = tokenizer(ex["chosen"] + (tokenizer.eos_token or ""), add_special_tokens=False).input_ids
        ids = (prompt + answer)[:max_length]
        n_prompt = len(prompt)
        if len(ids) <= n_prompt:
            continue
        x = torch.tensor([ids], device=device)
        targets = torch.full_like(x, IGNORE)
        targets[0, n_prompt - 1:len(ids) - 1] = x[0, n_prompt:]
        first = n_prompt - 1
        keep = len(ids) - first
        s = student(input_ids=x, use_cache=False, logits_to_keep=keep).logits.float()
        t_prompt = tokenizer(ex["teacher_prompt"]).input_ids if "teacher_prompt" in ex else prompt
        t_ids = torch.tensor([t_prompt + ids[n_prompt:]], device=device)
        t = teacher(input_ids=t_ids, use_cache=False, logits_to_keep=keep).logits.float()
        tg = targets[:, first:]
        for a in range(0, keep, chunk):
            ls = torch.log_softmax(s[0, a:a + chunk], -1)
            lt = torch.log_softmax(t[0, a:a + chunk], -1)
            m = tg[0, a:a + chunk] != IGNORE
            kl_sum += float(((lt.exp() * (lt - ls)).sum(-1) * m).sum())
        nll_s -= float(label_logprobs(s, tg, chunk).sum())
        nll_t -= float(label_logprobs(t, tg, chunk).sum())
        tokens += int((tg != IGNORE).sum())
    if not tokens:
        raise ValueError("no answer tokens to measure (empty test pairs, or every answer truncated away)")
    return {"kl": round(kl_sum / tokens, 4), "student_ppl": round(math.exp(nll_s / tokens), 3),
            "teacher_ppl": round(math.exp(nll_t / tokens), 3), "tokens": tokens}


def _answer_nll(model, examples: list[dict], tokenizer, max_length: int, chunk: int, prompt_key: str):
    """(summed NLL, token count) of the answers (EOS included) under ``model`` with its own tokenizer."""
    device = next(model.parameters()).device
    nll = 0.0
    tokens = 0
    for ex in examples:
        prompt = tokenizer(ex.get(prompt_key, ex["prompt"])).input_ids
        answer = tokenizer(ex["chosen"] + (tokenizer.eos_token or ""), add_special_tokens=False).input_ids
        ids = (prompt + answer)[:max_length]
        if len(ids) <= len(prompt):
            continue
        x = torch.tensor([ids], device=device)
        targets = torch.full_like(x, IGNORE)
        targets[0, len(prompt) - 1:len(ids) - 1] = x[0, len(prompt):]
        keep = len(ids) - len(prompt) + 1
        logits = model(input_ids=x, use_cache=False, logits_to_keep=keep).logits.float()
        nll -= float(label_logprobs(logits, targets[:, -keep:], chunk).sum())
        tokens += len(ids) - len(prompt)
    if not tokens:
        raise ValueError("no answer tokens to measure (empty test pairs, or every answer truncated away)")
    return nll, tokens
