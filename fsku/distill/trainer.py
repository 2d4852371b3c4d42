"""The DistiLLM-2 trainer: TRL's DPOTrainer with the teacher as its frozen reference model and one
method, ``compute_loss``, replaced by the chunked contrastive distillation loss.

TRL supplies what a preference trainer needs: tokenising prompt/chosen/rejected, the collator that
stacks chosen rows over rejected rows with a completion mask, PEFT wrapping, preparing the reference
model for DDP/DeepSpeed/FSDP, checkpoints and logging. Only the loss differs: instead of DPO's
log-ratio of label probabilities, the student's full next-token distributions are pulled toward the
teacher's on teacher answers (skew KL) and pushed away from the student's own on student answers
(skew reverse KL).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel
from trl import DPOTrainer
from trl.models.utils import _ForwardRedirection

from fsku.distill.config import TrainConfig
from fsku.distill.fused import fused_distill_loss, fused_pair_alphas
from fsku.distill.head import head_of
from fsku.distill.losses import IGNORE, adaptive_pair_alphas, distill_loss
from fsku.distill.pair_tokens import pair_token_ids
from fsku.distill.teacher_cache import TeacherCache
from fsku.io import write_json

STATE_FILE = "distill_state.json"


def response_targets(input_ids: torch.Tensor, completion_mask: torch.Tensor) -> tuple[int, torch.Tensor]:
    """(first position whose logits are needed, targets [N, L - first]): targets[n, i] is the token
    that position ``first + i`` predicts when it is a response token, else IGNORE. Logits are only
    needed from one position before the earliest response token on."""
    n, length = input_ids.shape
    starts = completion_mask.float().argmax(1)
    first = max(int(starts.min()) - 1, 0)
    nxt = input_ids[:, first + 1:].masked_fill(completion_mask[:, first + 1:] == 0, IGNORE)
    pad = torch.full((n, 1), IGNORE, dtype=nxt.dtype, device=nxt.device)
    return first, torch.cat([nxt, pad], dim=1)


GRADUAL_RISE = 0.5  # the reference schedule: beta rises by this much over the first half of training


def gradual_beta(beta: float, step: int, max_steps: int) -> float:
    """DistiLLM-2's schedule (``jongwooko/distillm-2``, ``kd_loss``): beta grows linearly by 0.5 over
    the first half of the optimizer steps, then holds, so the student-answer term gains weight as
    the student's own answers become worth contrasting. From the default beta 1 that is the
    reference's 1 -> 1.5 exactly; capped at 2, where the teacher-answer term's weight reaches 0."""
    return min(2.0, beta + GRADUAL_RISE * min(1.0, 2 * step / max_steps))


class DistillTrainer(DPOTrainer):
    """DPOTrainer whose loss is DistiLLM-2's (or a baseline divergence), chosen = teacher answers."""

    def __init__(self, *args, distill: TrainConfig, teacher_cache: TeacherCache | None = None, **kwargs):
        self.distill = distill
        self.teacher_cache = teacher_cache  # train.teacher_logits: cached (no ref_model then)
        self._cache_index = teacher_cache.index(kwargs["args"].max_length) if teacher_cache else None
        self.anchors: dict[str, float] | None = None  # adaptive alpha: the gaps early in training
        self._redirect = _ForwardRedirection()  # TRL's: a method of the model run as the DDP wrapper's forward
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """TRL's tokenisation of plain-text pairs (EOS appended, the completion starting where prompt
        and prompt+answer tokens diverge), without ``datasets.map``: map fingerprints its arguments by
        pickling them, and hashing a 262k-token tokenizer took about 15 s per run."""
        import datasets

        return datasets.Dataset.from_list([pair_token_ids(processing_class, ex) for ex in dataset])

    def current_beta(self) -> float:
        if not self.distill.gradual_beta or not self.state.max_steps:
            return self.distill.beta
        return gradual_beta(self.distill.beta, self.state.global_step, self.state.max_steps)

    def _alphas(self, measure, args):
        """The skews: fixed, or per pair from ``measure(*args, ...)`` (the logits' or the fused path's)."""
        cfg = self.distill
        if not cfg.adaptive_alpha:
            return cfg.alpha1, cfg.alpha2
        first = self.anchors is None
        a1, a2, self.anchors = measure(*args, cfg.alpha1, cfg.alpha2, self.anchors,
                                       reduce=lambda t: self.accelerator.reduce(t, "mean"), chunk=cfg.loss_chunk)
        if first and self.accelerator.is_main_process:  # before any checkpoint: a resume always finds it
            write_json(Path(self.args.output_dir) / STATE_FILE, {"anchors": self.anchors})
        return a1, a2

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids, attn, comp = inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"]
        n_pairs = ids.shape[0] // 2
        first, targets = response_targets(ids, comp)
        cfg = self.distill
        warm = model.training and self.state.global_step < cfg.warm_start_steps
        kw = dict(loss=cfg.warm_start_loss if warm else cfg.loss, beta=self.current_beta(), jsd_lambda=cfg.jsd_lambda,
                  chunk=cfg.loss_chunk)
        if cfg.fused_loss:
            # through the DDP wrapper's forward, so that DDP prepares its gradient reduction as for model(...)
            unwrapped = self.accelerator.unwrap_model(model)
            out = self._redirect(model, unwrapped, self._fused_loss, unwrapped, ids, attn, first, targets, n_pairs, kw)
            student = None
        else:
            keep = ids.shape[1] - first
            student = model(input_ids=ids, attention_mask=attn, use_cache=False, logits_to_keep=keep).logits
            with torch.no_grad():
                teacher = self.ref_model(input_ids=ids, attention_mask=attn, use_cache=False,
                                         logits_to_keep=keep).logits
            if teacher.shape[-1] != student.shape[-1]:
                raise ValueError(f"teacher vocabulary {teacher.shape[-1]} != student vocabulary {student.shape[-1]}")
            alpha1, alpha2 = self._alphas(adaptive_pair_alphas, (student, teacher, targets, n_pairs))
            out = distill_loss(student, teacher, targets, n_pairs, alpha1=alpha1, alpha2=alpha2, **kw)
        mode = "train" if model.training else "eval"
        values = torch.stack([out.chosen_term, out.rejected_term, out.kl_chosen, out.kl_rejected,
                              out.alpha1, out.alpha2]).float()
        values = self.accelerator.gather_for_metrics(values[None]).mean(0)
        for key, v in zip(("loss_chosen", "loss_rejected", "kl_chosen", "kl_rejected", "alpha1", "alpha2"), values):
            self._metrics[mode][key].append(float(v))
        self._metrics[mode]["beta"].append(self.current_beta())
        self._metrics[mode]["warm_start"].append(float(warm))
        return (out.loss, {"logits": student}) if return_outputs else out.loss

    def _fused_loss(self, student, ids, attn, first, targets, n_pairs, kw):
        """The loss from both models' last hidden states and LM heads (``fused.py``): the full logits
        of neither model are ever built."""
        hidden = last_hidden_state(student, ids, attn)[:, first:]
        head = head_of(student)
        if self.teacher_cache is not None:  # the teacher's top-k from the teacher_logits stage
            topk, t_logprobs = self.teacher_cache.batch(self._cache_index, ids, attn, first)
            alpha1, alpha2 = self._alphas(lambda *a, **k: fused_pair_alphas(*a, t_logprobs=t_logprobs, **k),
                                          (hidden, head, None, None, targets, n_pairs))
            return fused_distill_loss(hidden, head, None, None, targets, n_pairs, alpha1=alpha1, alpha2=alpha2,
                                      teacher_topk=topk, **kw)
        teacher = self.accelerator.unwrap_model(self.ref_model)
        with torch.no_grad():
            t_hidden = last_hidden_state(teacher, ids, attn)[:, first:]
        t_head = head_of(teacher)
        alpha1, alpha2 = self._alphas(fused_pair_alphas, (hidden, head, t_hidden, t_head, targets, n_pairs))
        return fused_distill_loss(hidden, head, t_hidden, t_head, targets, n_pairs, alpha1=alpha1, alpha2=alpha2, **kw)

    def load_distill_state(self) -> None:
        """The adaptive-alpha anchors of the run being resumed (set on its first batch)."""
        f = Path(self.args.output_dir) / STATE_FILE
        if f.exists():
            self.anchors = json.loads(f.read_text())["anchors"]


def last_hidden_state(model, ids, attn) -> torch.Tensor:
    """The decoder's output before the LM head (after its final norm), PEFT-wrapped or not: what
    the head turns into logits."""
    if isinstance(model, PeftModel):
        model = model.base_model.model
    return model.base_model(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state

