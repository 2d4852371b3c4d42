"""Choice distillation: the teacher's distribution over the options of every training multiple-choice
question, taught to the student at the one position that decides its answer.

The student answers a multiple-choice question by the likeliest "정답: N" (``eval.mcq_mode: loglik``).
Sequence-level KD on the teacher's written answers reaches that position once per answer, among a
hundred tokens of explanation, and only for the few questions of the capped prompt pool: measured on
the embedded default, the SFT student's option distribution stayed near uniform and DistiLLM-2's
steps moved its prior onto "1". Here every deduplicated training MCQ (136 of ``train.csv``'s 170) is
one example: the prompt exactly as ``evaluate`` and ``predict`` format it, the answer mark, and as the
target the teacher's softmax over the options' digits (soft labels, Hinton et al.). The loss is the
cross-entropy of the student's distribution over the same digits against it (the forward KL plus the
teacher's entropy), computed from the last prompt position's logits only.

A student can lower that loss by a prior over positions alone: the teacher's picks on the training
questions are not spread evenly, and runs that showed each question in its own order collapsed onto
one number on ``eval.csv``. ``option_rotations`` shows every question that many times, its options
rotated so that the teacher's pick takes a different position each time, and the positions of the
picks are balanced over the questions; the target rotates with the options. Only reading the options
then lowers the loss.

The prompts whose id ``pairs`` holds out as test pairs (the seeded hash of ``pairs.seed``) stay out
of training and measure the student's agreement with the teacher before and after.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from fsku.config import field
from fsku.distill.pairs import PairsConfig, is_test
from fsku.gen.choice import ANSWER_PREFIX
from fsku.gen.format import format_prompt


@dataclass
class ChoiceParams:
    """``sft.choices``: the second phase of ``sft``; names follow transformers' ``TrainingArguments``."""
    num_train_epochs: float = field(2.0, ge=0.0, le=100.0, doc="passes over the choice examples; 0 = off")
    learning_rate: float = field(2e-4, gt=0.0, le=1.0)
    per_device_train_batch_size: int = field(4, ge=1)
    temperature: float = field(1.0, gt=0.0, doc="softmax temperature of the teacher's option log-probabilities")
    option_rotations: int = field(0, ge=0, le=10, doc="copies of each question, options rotated so the teacher's "
                                  "pick takes each position in turn; 0 = the question's own order")


def answer_position(tokenizer, prompt: str, n_options: int) -> tuple[list[int], list[int]]:
    """(ids of the prompt and the answer mark, the token id of each option's digit): "정답: 1" ..
    "정답: N" must differ from each other in one final token, as ``continuation_logprobs`` scores them."""
    seqs = [tokenizer(prompt + f"{ANSWER_PREFIX}{i}").input_ids for i in range(1, n_options + 1)]
    n = len(seqs[0]) - 1
    if any(len(s) != n + 1 or s[:n] != seqs[0][:n] for s in seqs):
        raise ValueError(f"the tokenizer does not end '{ANSWER_PREFIX}N' with one digit token; choice "
                         "distillation needs it (set sft.choices.num_train_epochs: 0)")
    return seqs[0][:n], [s[-1] for s in seqs]


def teacher_targets(logprobs: list[float], temperature: float = 1.0) -> list[float]:
    """The teacher's softmax over the options."""
    top = max(logprobs)
    w = [math.exp((x - top) / temperature) for x in logprobs]
    return [x / sum(w) for x in w]


def rotate(prompt: str, options: list[str], target: list[float], shift: int) -> tuple[str, list[float]]:
    """The prompt with its option lines ("1 text" .. "N text", as ``user_prompt`` writes them) rotated
    by ``shift`` (option ``shift + 1`` first), and the target rotated with them."""
    n = len(options)
    block = "\n".join(f"{i} {o}" for i, o in enumerate(options, 1))
    if n != len(target) or prompt.count(block) != 1:
        raise ValueError("the prompt does not hold its options once as numbered lines; it cannot be rotated")
    order = [(p + shift) % n for p in range(n)]
    moved = "\n".join(f"{i} {options[j]}" for i, j in enumerate(order, 1))
    return prompt.replace(block, moved), [target[j] for j in order]


def _rank(prompt_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{prompt_id}".encode()).hexdigest()


def shown_orders(records: list[dict], rotations: int, seed: int) -> dict[str, list[int]]:
    """The rotations each record is shown in: copy j puts the teacher's pick at position (h + j) mod N,
    h counting through the N-option questions in a seeded order, so picks are spread evenly."""
    out: dict[str, list[int]] = {}
    by_n: dict[int, list[dict]] = {}
    for r in records:
        by_n.setdefault(len(r["logprobs"]), []).append(r)
    for n, group in by_n.items():
        for h, r in enumerate(sorted(group, key=lambda r: _rank(r["prompt_id"], seed))):
            pick = max(range(n), key=r["logprobs"].__getitem__)
            out[r["prompt_id"]] = [(pick - (h + j)) % n for j in range(rotations)]
    return out


def choice_examples(records: list[dict], tokenizer, pairs_cfg: PairsConfig, temperature: float = 1.0,
                    rotations: int = 0, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, held_out) from ``teacher_choices`` records: input ids up to the answer digit, the digits'
    token ids and the teacher's targets. The student reads the prompt through its own chat template.
    Held-out questions keep their own order; training ones are shown ``rotations`` times (0: once, as is)."""
    train, held_out = [], []
    test = {r["prompt_id"] for r in records if is_test(r["prompt_id"], pairs_cfg)}
    orders = shown_orders([r for r in records if r["prompt_id"] not in test], rotations, seed) if rotations else {}
    for i, r in enumerate(records):
        target = teacher_targets(r["logprobs"], temperature)
        shown = [(r["prompt"], target)]
        if r["prompt_id"] in orders:
            if not r.get("options"):
                raise ValueError(f"teacher choice record {i + 1} ({r['prompt_id']}) has no options to rotate; "
                                 "rerun the prompts and teacher_choices stages")
            try:
                shown = [rotate(r["prompt"], r["options"], target, s) for s in orders[r["prompt_id"]]]
            except ValueError as e:
                raise ValueError(f"teacher choice record {i + 1} ({r['prompt_id']}): {e}") from None
        for prompt, tgt in shown:
            ids, digits = answer_position(tokenizer, format_prompt(tokenizer, prompt), len(tgt))
            ex = {"prompt_id": r["prompt_id"], "input_ids": ids, "option_ids": digits, "target": tgt}
            (held_out if r["prompt_id"] in test else train).append(ex)
    return train, held_out


def collate(examples: list[dict], pad_id: int) -> dict:
    """Left-padded batch (every row's answer position is the last), with position ids that skip the
    padding; options padded with -1."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    k = max(len(e["option_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    options = torch.full((len(examples), k), -1, dtype=torch.long)
    target = torch.zeros((len(examples), k))
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, width - n:] = torch.tensor(e["input_ids"])
        mask[i, width - n:] = 1
        options[i, : len(e["option_ids"])] = torch.tensor(e["option_ids"])
        target[i, : len(e["target"])] = torch.tensor(e["target"])
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(1) - 1).clamp(min=0),
            "options": options, "target": target}


def option_logprobs(model, batch: dict):
    """The student's log-softmax over each row's options at its answer position (padding 0)."""
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], use_cache=False, logits_to_keep=1).logits[:, -1].float()
    valid = batch["options"] >= 0
    picked = logits.gather(1, batch["options"].clamp(min=0))
    return torch.log_softmax(picked.masked_fill(~valid, float("-inf")), -1).masked_fill(~valid, 0.0)


def choice_loss(model, batch: dict):
    """Mean cross-entropy of the student's option distribution against the teacher's."""
    return -(batch["target"] * option_logprobs(model, batch)).sum(-1).mean()


def agreement(model, examples: list[dict], batch_size: int = 8) -> dict | None:
    """On held-out examples: how often the student's likeliest option is the teacher's, and the mean
    KL(teacher || student) over the options. None without examples."""
    import torch

    if not examples:
        return None
    same, kl = 0, 0.0
    pad = 0  # masked: any id scores the same
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            chunk = examples[i:i + batch_size]
            batch = collate(chunk, pad)
            batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
            lq = option_logprobs(model, batch)
            for e, row in zip(chunk, lq):
                q = row[: len(e["target"])].tolist()
                p = e["target"]
                same += max(range(len(p)), key=p.__getitem__) == max(range(len(q)), key=q.__getitem__)
                kl += sum(pi * (math.log(pi) - qi) for pi, qi in zip(p, q) if pi > 0)
    return {"agreement": round(same / len(examples), 4), "kl": round(kl / len(examples), 4),
            "examples": len(examples)}


def build_choice_trainer(params: ChoiceParams, model, tokenizer, train: list[dict], output_dir: str, seed: int,
                         bf16: bool, lr_scheduler_type: str = "cosine", max_grad_norm: float = 1.0,
                         warmup_ratio: float = 0.0, weight_decay: float = 0.0):
    """transformers' Trainer with the choice loss: ``ChoiceTrainer`` overrides ``compute_loss`` only."""
    import torch
    from transformers import Trainer, TrainingArguments

    class ChoiceTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return choice_loss(model, inputs)

    args = TrainingArguments(
        output_dir=output_dir, num_train_epochs=params.num_train_epochs,
        per_device_train_batch_size=params.per_device_train_batch_size, learning_rate=params.learning_rate,
        lr_scheduler_type=lr_scheduler_type, max_grad_norm=max_grad_norm, warmup_steps=warmup_ratio,
        weight_decay=weight_decay, seed=seed, data_seed=seed,
        bf16=bf16, fp16=False, use_cpu=not torch.cuda.is_available(), save_strategy="no", logging_steps=1,
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, eval_strategy="no",
        remove_unused_columns=False)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return ChoiceTrainer(model=model, args=args, train_dataset=train, data_collator=lambda b: collate(b, pad))
