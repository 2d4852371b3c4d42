"""The distillation loss from hidden states and LM heads: the logits never exist whole.

``losses.distill_loss`` takes the full student and teacher logits (rows x positions x vocabulary);
at a real user's shapes (vocabulary 151,936 or 262,144, 1,024 positions, 16 rows) each is several
GB before the loss starts. Here the loss takes each model's last hidden states and LM head weight
and works through the response positions a chunk at a time: the chunk's logits (hidden @ head.T,
then the model's logit scale and soft-cap), log-softmaxes, the divergence and its analytic gradient
with respect to the chunk's student logits, which is then carried back to the hidden states
(``g @ W``) and, where the head is trained, to the head weight (``g.T @ h``). Only one chunk of
vocabulary-sized values is alive at a time; what the loss keeps is the gradient for the hidden
states (rows x positions x hidden) and, for a trained head, one for the weight.

Positions are taken across rows (responses are short next to prompts), so a chunk is full even when
each answer is a few dozen tokens. Values and gradients equal ``losses.distill_loss`` (and the dense
reference) on the logits the head would produce; tests check it in float64 for every loss name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fsku.distill.head import Head
from fsku.distill.losses import IGNORE, KIND_ID, LossOutput, _divergence, pair_alphas


@dataclass(frozen=True)
class TopK:
    """The teacher's distribution at each position, cut to its k likeliest tokens: ``ids`` [..., k],
    their log-probabilities ``logprobs`` [..., k] and ``rest`` [...], the log of the mass left over
    (exactly ``logsumexp`` of the other tokens' log-probabilities, computed from the full logits)."""
    ids: torch.Tensor
    logprobs: torch.Tensor
    rest: torch.Tensor

    def __getitem__(self, index) -> "TopK":
        return TopK(self.ids[index], self.logprobs[index], self.rest[index])


REST_FLOOR = -1e4  # log of a leftover mass that is zero (k covers every token the teacher gives mass)


def coarse(lq: torch.Tensor, t: TopK):
    """The student's and teacher's distributions over k + 1 outcomes: the teacher's k tokens, then
    everything else as one bucket. Returns (student log-probs [C, k+1], teacher's [C, k+1], the
    student's log-probs [C, V] relative to its own rest bucket, for spreading the bucket's gradient).

    A divergence between the two coarse distributions is a lower bound of the full one (merging
    outcomes never increases a KL), equal to it when the teacher's top k hold all its mass."""
    ids = t.ids.long()
    lq_top = lq.gather(-1, ids)
    lq_rest = torch.logsumexp(lq.scatter(-1, ids, float("-inf")), -1).clamp(min=REST_FLOOR)
    big_q = torch.cat([lq_top, lq_rest[:, None]], -1)
    big_p = torch.cat([t.logprobs.to(lq.dtype), t.rest.to(lq.dtype).clamp(min=REST_FLOOR)[:, None]], -1)
    return big_q, big_p, lq - lq_rest[:, None]


def spread(g_coarse: torch.Tensor, ids: torch.Tensor, within_rest: torch.Tensor) -> torch.Tensor:
    """d loss / d student logits [C, V] from the gradient with respect to the coarse logits [C, k+1]:
    each top-k token takes its own outcome's, the other tokens share the rest bucket's in proportion
    to their probability within it (``q_j / q_rest``)."""
    share = torch.exp(within_rest)
    share = torch.where(torch.isfinite(share), share, torch.zeros_like(share))
    g = share * g_coarse[:, -1:]
    return g.scatter(-1, ids.long(), g_coarse[:, :-1])


def _positions(weight: torch.Tensor, kinds: torch.Tensor):
    """Response positions grouped by divergence kind, as (kind, rows, cols) in row-major order."""
    rows, cols = weight.nonzero(as_tuple=True)
    k = kinds.to(rows.device)[rows]
    return [(int(kind), rows[k == kind], cols[k == kind]) for kind in torch.unique(k).tolist()]


class _FusedDivergence(torch.autograd.Function):
    """loss = sum over positions of weight * divergence(teacher, student); the gradients with respect
    to the student's hidden states and head weight are formed chunk by chunk in forward and handed
    on, scaled, in backward."""

    @staticmethod
    def forward(ctx, hidden, head_weight, t_hidden, weight, kinds, alpha, chunk, stats, head, t_head, topk):
        """The teacher comes as hidden states + head (exact) or as ``topk`` (cached, approximate)."""
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        cd = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(head_weight.shape, dtype=cd, device=head_weight.device) if need_w else None
        total = torch.zeros((), dtype=torch.float64, device=hidden.device)
        for kind, rows, cols in _positions(weight, kinds):
            for s in range(0, rows.numel(), chunk):
                r, c = rows[s:s + chunk], cols[s:s + chunk]
                h = hidden[r, c]
                zq, dq = head.logits(h, cd)
                lq = torch.log_softmax(zq, -1)
                del zq
                if topk is None:
                    lp = torch.log_softmax(t_head.logits(t_hidden[r, c], cd)[0], -1)
                else:
                    t = topk[r, c]
                    lq, lp, within_rest = coarse(lq, t)
                w = weight[r, c].to(cd)
                d, g = _divergence(kind, lq, lp, alpha[r].to(cd)[:, None], need_h or need_w)
                total += (w * d).sum().double()
                stats["div"].index_add_(0, r, d.double())
                stats["kl"].index_add_(0, r, (lp.exp() * (lp - lq)).sum(-1).double())
                del lq, lp, d
                if g is None:
                    continue
                if topk is not None:
                    g = spread(g, t.ids, within_rest)
                    del within_rest
                g = g * w[:, None] * head.backward_scale  # d loss / d raw logits (h @ W.T)
                if dq is not None:
                    g = g * dq
                if need_h:
                    grad_h[r, c] = (g.to(head_weight.dtype) @ head_weight).to(grad_h.dtype)
                if need_w:
                    grad_w += g.T @ h.to(cd)
                del g, dq
        ctx.save_for_backward(grad_h if need_h else torch.empty(0),
                              grad_w.to(head_weight.dtype) if need_w else torch.empty(0))
        ctx.need = (need_h, need_w)
        return total.to(cd)

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        need_h, need_w = ctx.need
        return (grad_h * grad_out.to(grad_h.dtype) if need_h else None,
                grad_w * grad_out.to(grad_w.dtype) if need_w else None,
                None, None, None, None, None, None, None, None, None)


@torch.no_grad()
def hidden_label_logprobs(hidden: torch.Tensor, head: Head, targets: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """``losses.label_logprobs`` from hidden states: each target token's log-probability [N, T]."""
    out = torch.zeros(targets.shape, dtype=torch.float32, device=hidden.device)
    rows, cols = (targets != IGNORE).nonzero(as_tuple=True)
    for s in range(0, rows.numel(), chunk):
        r, c = rows[s:s + chunk], cols[s:s + chunk]
        z, _ = head.logits(hidden[r, c], torch.float32)
        out[r, c] = z.gather(-1, targets[r, c][:, None])[:, 0] - torch.logsumexp(z, -1)
    return out


def fused_pair_alphas(hidden, head: Head, t_hidden, t_head: Head | None, targets, n_pairs: int, base1: float,
                      base2: float, anchors: dict | None = None, reduce=lambda t: t, chunk: int = 128,
                      t_logprobs: torch.Tensor | None = None):
    """``losses.adaptive_pair_alphas`` from hidden states; the teacher's answer-token log-probs from
    its hidden states and head, or given (``t_logprobs`` [N, T], as the teacher cache keeps them)."""
    if t_logprobs is None:
        t_logprobs = hidden_label_logprobs(t_hidden.detach(), t_head, targets, chunk)
    return pair_alphas(hidden_label_logprobs(hidden.detach(), head, targets, chunk), t_logprobs, targets, n_pairs,
                       base1, base2, anchors, reduce)


def fused_distill_loss(hidden: torch.Tensor, head: Head, t_hidden: torch.Tensor | None, t_head: Head | None,
                       targets: torch.Tensor, n_pairs: int, loss: str = "distillm2", beta: float = 1.0,
                       alpha1: float | torch.Tensor = 0.1, alpha2: float | torch.Tensor = 0.1,
                       jsd_lambda: float = 0.5, chunk: int = 128, teacher_topk: TopK | None = None) -> LossOutput:
    """``losses.distill_loss`` on the logits ``head`` and ``t_head`` would give for ``hidden`` and
    ``t_hidden`` [2 * n_pairs, T, H], chosen rows first; ``targets[n, j]`` is the token position j
    predicts (IGNORE outside responses). The teacher side is read under no_grad.

    With ``teacher_topk`` ([2 * n_pairs, T, k] cached top-k of the teacher) instead of ``t_hidden``
    and ``t_head``, each divergence is taken between the two distributions coarsened to the
    teacher's k tokens and one bucket for the rest (``coarse``): no teacher model is needed."""
    n = hidden.shape[0]
    t_shape = teacher_topk.rest.shape if teacher_topk is not None else t_hidden.shape[:2]
    if n != 2 * n_pairs or t_shape != hidden.shape[:2] or targets.shape != hidden.shape[:2]:
        raise ValueError(f"expected 2 x {n_pairs} rows of equal length, got hidden {tuple(hidden.shape)}, "
                         f"teacher {tuple(t_shape)}, targets {tuple(targets.shape)}")
    if teacher_topk is None and head.weight.shape[0] != t_head.weight.shape[0]:
        raise ValueError(f"teacher vocabulary {t_head.weight.shape[0]} != student vocabulary {head.weight.shape[0]}")
    cd = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    mask = (targets != IGNORE).to(cd)
    lengths = mask.sum(-1)
    if bool((lengths == 0).any()):
        raise ValueError("a sequence has no response tokens (all padding or truncated away)")
    dev = hidden.device
    a1 = torch.as_tensor(alpha1, dtype=cd, device=dev).expand(n_pairs)
    a2 = torch.as_tensor(alpha2, dtype=cd, device=dev).expand(n_pairs)
    if loss == "distillm2":
        kinds = [KIND_ID["skl"]] * n_pairs + [KIND_ID["srkl"]] * n_pairs
        coef = torch.tensor([2.0 - beta] * n_pairs + [beta] * n_pairs, dtype=cd, device=dev)
        alpha = torch.cat([a1, a2])
    else:
        kinds = [KIND_ID[loss]] * n
        coef = torch.ones(n, dtype=cd, device=dev)
        value = {"fkl": 0.0, "rkl": 0.0, "skl": a1, "srkl": a2, "jsd": jsd_lambda}[loss]
        alpha = torch.as_tensor(value, dtype=cd, device=dev).expand(n_pairs).repeat(2)
    weight = mask * (coef / lengths / n_pairs)[:, None]
    stats = {"div": torch.zeros(n, dtype=torch.float64, device=dev),
             "kl": torch.zeros(n, dtype=torch.float64, device=dev)}
    if teacher_topk is None:
        t_hidden, t_head = t_hidden.detach(), Head(t_head.weight.detach(), t_head.scale, t_head.softcap)
    total = _FusedDivergence.apply(hidden, head.weight, t_hidden, weight, torch.tensor(kinds), alpha, chunk,
                                   stats, head, t_head, teacher_topk)
    if loss != "distillm2":  # baselines weigh both sides equally: the mean of the two
        total = total / 2
    div, kl = stats["div"] / lengths, stats["kl"] / lengths
    return LossOutput(total, div[:n_pairs].mean(), div[n_pairs:].mean(), kl[:n_pairs].mean(), kl[n_pairs:].mean(),
                      alpha[:n_pairs].mean(), alpha[n_pairs:].mean())
