"""On-policy distillation (GKD, Agarwal et al. 2024) through TRL's ``GKDTrainer``, with a system
prompt that only the teacher's input gets.

``GKDTrainer`` supplies the method: with probability ``lmbda`` a step trains on answers the student
samples from its own prompt (on-policy), otherwise on the pairs' teacher answers (or, with
``seq_kd``, on fresh teacher samples); the loss is its generalised JSD between the two models'
next-token distributions at every answer token. It scores the teacher on the student's very input.
One method is replaced, ``compute_loss``: the teacher reads ``teacher_system`` + the prompt +
the same answer tokens, and its distributions at those answer tokens are lined up with the
student's. An instruction that only the teacher is given (an answer format, a persona) is thus
distilled into a student that is never told it.

The loss is averaged over the batch's answer tokens, on-policy batches too (the upstream
``compute_loss`` divides by the token count of the batch as loaded, which on-policy steps replace).
"""

from __future__ import annotations

import torch
from trl.experimental.gkd import GKDConfig, GKDTrainer

from fsku.distill.losses import IGNORE
from fsku.distill.pair_tokens import common_prefix


def tokenize_examples(examples: list[dict], tokenizer, max_length: int) -> list[dict]:
    """Token ids of the student's prompt, the teacher's prompt and the answer (EOS appended), taken
    from one tokenisation of prompt + answer so the answer tokens are those the student trains on."""
    eos = tokenizer.eos_token or ""
    rows = []
    for ex in examples:
        prompt = tokenizer(ex["prompt"]).input_ids
        answer = ex["chosen"] if ex["chosen"].endswith(eos) else ex["chosen"] + eos
        full = tokenizer(ex["prompt"] + answer).input_ids[:max_length]
        n = common_prefix(prompt, full)
        rows.append({"prompt_ids": prompt[:n], "completion_ids": full[n:],
                     "teacher_prompt_ids": tokenizer(ex.get("teacher_prompt", ex["prompt"])).input_ids})
    return rows


class TeacherPromptCollator:
    """Batches of ``tokenize_examples`` rows in the layout ``GKDTrainer`` expects (``input_ids``,
    ``attention_mask`` and ``labels`` right-padded, answer tokens only in ``labels``; ``prompts``
    left-padded for generation), plus the teacher's prompts (``teacher_prompts``, right-padded, and
    ``teacher_prompt_lengths``)."""

    def __init__(self, pad_id: int):
        self.pad = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        full = [r["prompt_ids"] + r["completion_ids"] for r in rows]
        width = max(map(len, full))
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        labels = torch.full_like(ids, IGNORE)
        for i, (r, seq) in enumerate(zip(rows, full)):
            ids[i, :len(seq)] = torch.tensor(seq)
            attn[i, :len(seq)] = 1
            labels[i, len(r["prompt_ids"]):len(seq)] = torch.tensor(r["completion_ids"], dtype=torch.long)
        prompts, prompt_mask = _pad([r["prompt_ids"] for r in rows], self.pad, left=True)
        teacher, _ = _pad([r["teacher_prompt_ids"] for r in rows], self.pad, left=False)
        return {"input_ids": ids, "attention_mask": attn, "labels": labels, "prompts": prompts,
                "prompt_attention_mask": prompt_mask, "teacher_prompts": teacher,
                "teacher_prompt_lengths": torch.tensor([len(r["teacher_prompt_ids"]) for r in rows])}


class TeacherPromptGKDTrainer(GKDTrainer):
    """``GKDTrainer`` whose teacher reads its own prompt (``teacher_system`` included)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids, labels = inputs["input_ids"], inputs["labels"]
        out = model(input_ids=ids, attention_mask=inputs["attention_mask"], use_cache=False)
        answer = labels[:, 1:] != IGNORE  # position j predicts answer token j + 1
        student = out.logits[:, :-1][answer]  # [answer tokens, vocabulary]
        self.teacher_model.eval()
        with torch.no_grad():
            teacher = teacher_answer_logits(self.teacher_model, ids, answer, inputs["teacher_prompts"],
                                            inputs["teacher_prompt_lengths"], self.processing_class.pad_token_id)
        every = torch.zeros((1, student.shape[0]), dtype=torch.long, device=student.device)
        loss = self.generalized_jsd_loss(student[None], teacher[None], labels=every, beta=self.beta)
        return (loss, out) if return_outputs else loss


def teacher_answer_logits(teacher, ids: torch.Tensor, answer: torch.Tensor, teacher_prompts: torch.Tensor,
                          lengths: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """The teacher's logits at each answer token of ``ids`` (the ``answer`` mask, [B, L - 1]: position
    j predicts token j + 1), the teacher reading its own prompt followed by the same answer tokens.
    Rows are in the order of ``answer``'s True entries, as ``student_logits[:, :-1][answer]``."""
    seqs, spans = [], []
    for b in range(ids.shape[0]):
        pos = answer[b].nonzero().squeeze(1)
        prompt = teacher_prompts[b, :int(lengths[b])]
        seqs.append(torch.cat([prompt, ids[b, pos + 1]]))
        spans.append((len(prompt) - 1, len(pos)))
    width = max(len(s) for s in seqs)
    x = torch.full((len(seqs), width), pad_id or 0, dtype=torch.long, device=ids.device)
    mask = torch.zeros_like(x)
    for b, s in enumerate(seqs):
        x[b, :len(s)] = s
        mask[b, :len(s)] = 1
    logits = teacher(input_ids=x, attention_mask=mask, use_cache=False).logits
    return torch.cat([logits[b, start:start + n] for b, (start, n) in enumerate(spans)])


def gkd_trainer(cfg, common: dict, student, teacher, tokenizer, train: list[dict], peft_config):
    """The trainer for ``train.method: gkd``: ``common`` holds the TrainingArguments both methods share."""
    import datasets

    g = cfg.gkd
    args = GKDConfig(**common, max_length=cfg.max_length, lmbda=g.lmbda, beta=g.beta, temperature=g.temperature,
                     max_new_tokens=g.max_new_tokens, seq_kd=g.seq_kd, disable_dropout=True)
    rows = tokenize_examples(train, tokenizer, cfg.max_length)
    return TeacherPromptGKDTrainer(model=student, teacher_model=teacher, args=args,
                                   data_collator=TeacherPromptCollator(tokenizer.pad_token_id or 0),
                                   train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
                                   peft_config=peft_config)


def _pad(seqs: list[list[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    x = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros_like(x)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        x[i, sl] = torch.tensor(s, dtype=torch.long)
        mask[i, sl] = 1
    return x, mask

