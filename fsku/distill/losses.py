"""DistiLLM-2 contrastive distillation loss and its baselines, chunked over tokens.

With p the teacher's and q the student's next-token distributions at a response position:

- ``skl``  skew forward KL  ``KL(p || a p + (1-a) q)``, gradient through q inside the mixture;
- ``srkl`` skew reverse KL  ``KL(q || (1-a) p + a sg(q))``, the q inside the mixture detached;
- ``fkl`` = skl at a=0, ``rkl`` = srkl at a=0;
- ``jsd``  generalised JSD  ``l KL(p || m) + (1-l) KL(q || m)``, ``m = l p + (1-l) q`` (as in GKD).

DistiLLM-2 applies skl to teacher answers (chosen) and srkl to student answers (rejected); per pair
``(2 - beta) * SKL + beta * SRKL``, each averaged over the sequence's response tokens, then averaged
over pairs. The baselines apply one divergence to the response tokens of both sequences.

Memory: the reference formulation keeps several batch x time x vocab tensors (two log-softmaxes,
two probability tensors, the log-mixture, their product, and autograd's saved copies). Here the
divergence and its gradient with respect to the student logits are computed together, a chunk of
positions at a time in fp32 log space (logsumexp mixtures), so at most one chunk of vocabulary-sized
fp32 values per temporary is alive; the only full-size tensor added to the inputs is the gradient
itself, which backward hands on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("fkl", "rkl", "skl", "srkl", "jsd")
KIND_ID = {k: i for i, k in enumerate(KINDS)}
IGNORE = -100


def _divergence(kind: int, lq: torch.Tensor, lp: torch.Tensor, a: torch.Tensor, need_grad: bool):
    """Per-position divergence [C] and its gradient w.r.t. the student logits [C, V] (or None).

    lq, lp: student/teacher log-probabilities [C, V] (fp32); a: skew or JSD weight per position [C, 1].
    For a loss ``sum_j f(q)`` the logit gradient is ``q*g - q * sum(q*g)`` with ``g = df/dq``; ``q*g`` is
    formed in log space so that it stays finite where q underflows."""
    q = lq.exp()
    if kind in (KIND_ID["fkl"], KIND_ID["skl"]):
        # m = a p + (1-a) q ; d = sum p (lp - lm) ; q g = -(1-a) q p / m
        lm = torch.logaddexp(lp + torch.log(a), lq + torch.log1p(-a))
        d = (lp.exp() * (lp - lm)).sum(-1)
        qg = -(1 - a) * torch.exp(lq + lp - lm) if need_grad else None
    elif kind in (KIND_ID["rkl"], KIND_ID["srkl"]):
        # m = (1-a) p + a sg(q) ; d = sum q (lq - lm) ; g = lq - lm (+1, which cancels)
        lm = torch.logaddexp(lp + torch.log1p(-a), lq + torch.log(a))
        qg = q * (lq - lm)
        d = qg.sum(-1)
    else:  # jsd: m = l p + (1-l) q ; d = l KL(p||m) + (1-l) KL(q||m) ; g = (1-l) (lq - lm)
        lm = torch.logaddexp(lp + torch.log(a), lq + torch.log1p(-a))
        d = a[:, 0] * (lp.exp() * (lp - lm)).sum(-1) + (1 - a[:, 0]) * (q * (lq - lm)).sum(-1)
        qg = (1 - a) * q * (lq - lm) if need_grad else None
    if not need_grad:
        return d, None
    return d, qg - q * qg.sum(-1, keepdim=True)


def response_chunks(mask: torch.Tensor, chunk: int):
    """(row, start, end) over each row's response span (its first to last True in ``mask`` [N, T]),
    ``chunk`` positions at a time: the one loop of every chunked loss and measure, so at most a
    chunk of vocabulary-sized float32 is alive at once."""
    for row in range(mask.shape[0]):
        pos = mask[row].nonzero().flatten()
        if pos.numel() == 0:
            continue
        lo, hi = int(pos[0]), int(pos[-1]) + 1
        for s in range(lo, hi, chunk):
            yield row, s, min(s + chunk, hi)


class _ChunkedDivergence(torch.autograd.Function):
    """loss = sum over positions of weight * divergence; backward returns the gradient computed in
    forward, scaled by the incoming gradient."""

    @staticmethod
    def forward(ctx, student, teacher, weight, kind, alpha, chunk, stats):
        need_grad = ctx.needs_input_grad[0]
        grad = torch.zeros_like(student) if need_grad else None
        total = torch.zeros((), dtype=torch.float64, device=student.device)
        cd = torch.float64 if student.dtype == torch.float64 else torch.float32  # float64 for exact tests
        for row, s, e in response_chunks(weight != 0, chunk):
            w = weight[row, s:e]
            lq = torch.log_softmax(student[row, s:e].to(cd), -1)
            lp = torch.log_softmax(teacher[row, s:e].to(cd), -1)
            a = alpha[row].to(cd).expand(e - s, 1)
            d, g = _divergence(int(kind[row]), lq, lp, a, need_grad)
            total += (w.to(cd) * d).sum().double()
            stats["div"][row] += (d * (w != 0)).sum()
            stats["kl"][row] += ((lp.exp() * (lp - lq)).sum(-1) * (w != 0)).sum()
            if g is not None:
                grad[row, s:e] = (w[:, None] * g).to(grad.dtype)
            del lq, lp, d, g
        ctx.save_for_backward(grad if grad is not None else torch.empty(0))
        return total.to(cd)

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad * grad_out.to(grad.dtype), None, None, None, None, None, None


@torch.no_grad()
def label_logprobs(logits: torch.Tensor, targets: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """Log-probability of each target token [N, T] (0 where the target is IGNORE), chunked."""
    out = torch.zeros(targets.shape, dtype=torch.float32, device=logits.device)
    mask = targets != IGNORE
    for row, s, e in response_chunks(mask, chunk):
        x = logits[row, s:e].float()
        tgt = targets[row, s:e].clamp(min=0)
        out[row, s:e] = (x.gather(-1, tgt[:, None])[:, 0] - torch.logsumexp(x, -1)) * mask[row, s:e]
    return out


@dataclass
class LossOutput:
    loss: torch.Tensor
    chosen_term: torch.Tensor     # mean over pairs of the chosen-side divergence (SKL for distillm2)
    rejected_term: torch.Tensor   # ... of the rejected side (SRKL for distillm2)
    kl_chosen: torch.Tensor       # plain KL(p || q) on teacher answers, mean over pairs
    kl_rejected: torch.Tensor     # ... on student answers
    alpha1: torch.Tensor          # mean skew used on chosen
    alpha2: torch.Tensor          # ... on rejected


def seq_mean_prob(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """exp(mean token log-prob) of each sequence's response: the sentence-level probability."""
    return torch.exp((logprobs * mask).sum(-1) / mask.sum(-1).clamp(min=1))


def adaptive_alphas(gap: torch.Tensor, anchor: float, base: float) -> torch.Tensor:
    """DistiLLM-2's per-sequence skew: ``clip(1 - (1 - base) * anchor / gap, 0.01, base)``, where gap is
    the sequence's probability gap (teacher over student on chosen, student over teacher on rejected)
    and anchor that gap's mean early in training. As the student closes the gap the skew shrinks
    toward 0.01 (toward plain KL); a gap at or above the anchor keeps the base skew."""
    return torch.clamp(1 - (1 - base) * anchor / (gap + 1e-5), min=min(0.01, base), max=base)


def adaptive_pair_alphas(student_logits, teacher_logits, targets, n_pairs: int, base1: float, base2: float,
                         anchors: dict | None = None, reduce=lambda t: t, chunk: int = 128):
    """Per-pair skews (alpha1 on chosen rows, alpha2 on rejected rows) and the anchors they are
    measured against, from the full logits (``pair_alphas``)."""
    return pair_alphas(label_logprobs(student_logits.detach(), targets, chunk),
                       label_logprobs(teacher_logits.detach(), targets, chunk), targets, n_pairs, base1, base2,
                       anchors, reduce)


def pair_alphas(student_lp, teacher_lp, targets, n_pairs: int, base1: float, base2: float,
                anchors: dict | None = None, reduce=lambda t: t):
    """Per-pair skews from each model's answer-token log-probabilities [N, T]. Without anchors yet,
    this batch's mean gaps become them (``reduce`` averages them over processes)."""
    mask = (targets != IGNORE).float()
    q, p = seq_mean_prob(student_lp * mask, mask), seq_mean_prob(teacher_lp * mask, mask)
    gap_chosen = p[:n_pairs] - q[:n_pairs]       # how far below the teacher the student is on its answers
    gap_rejected = q[n_pairs:] - p[n_pairs:]     # how much more the student likes its own answers
    if anchors is None:
        means = reduce(torch.stack([gap_chosen.mean(), gap_rejected.mean()]))
        anchors = {"chosen": float(means[0]), "rejected": float(means[1])}
    return (adaptive_alphas(gap_chosen, anchors["chosen"], base1),
            adaptive_alphas(gap_rejected, anchors["rejected"], base2), anchors)


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                 n_pairs: int, loss: str = "distillm2", beta: float = 1.0, alpha1: float | torch.Tensor = 0.1,
                 alpha2: float | torch.Tensor = 0.1, jsd_lambda: float = 0.5, chunk: int = 128) -> LossOutput:
    """The loss over a concatenated batch: rows ``[:n_pairs]`` are chosen (teacher answers), rows
    ``[n_pairs:]`` rejected (student answers). ``targets[n, j]`` is the token that position j predicts
    (IGNORE outside responses), so logits and targets are aligned without slicing copies.
    ``alpha1``/``alpha2`` are scalars or one value per pair."""
    n = student_logits.shape[0]
    if n != 2 * n_pairs or teacher_logits.shape != student_logits.shape:
        raise ValueError(f"expected 2 x {n_pairs} rows of equal shape, got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)}")
    mask = (targets != IGNORE).to(torch.float64 if student_logits.dtype == torch.float64 else torch.float32)
    lengths = mask.sum(-1)
    if bool((lengths == 0).any()):
        raise ValueError("a sequence has no response tokens (all padding or truncated away)")
    dev = student_logits.device
    a1 = torch.as_tensor(alpha1, dtype=mask.dtype, device=dev).expand(n_pairs)
    a2 = torch.as_tensor(alpha2, dtype=mask.dtype, device=dev).expand(n_pairs)
    if loss == "distillm2":
        kinds = [KIND_ID["skl"]] * n_pairs + [KIND_ID["srkl"]] * n_pairs
        coef = torch.tensor([2.0 - beta] * n_pairs + [beta] * n_pairs, dtype=mask.dtype, device=dev)
        alpha = torch.cat([a1, a2])
    else:
        kinds = [KIND_ID[loss]] * n
        coef = torch.ones(n, dtype=mask.dtype, device=dev)
        value = {"fkl": 0.0, "rkl": 0.0, "skl": a1, "srkl": a2, "jsd": jsd_lambda}[loss]
        alpha = torch.as_tensor(value, dtype=mask.dtype, device=dev).expand(n_pairs).repeat(2)
    weight = mask * (coef / lengths / n_pairs)[:, None]
    stats = {"div": torch.zeros(n, dtype=torch.float64, device=dev),
             "kl": torch.zeros(n, dtype=torch.float64, device=dev)}
    total = _ChunkedDivergence.apply(student_logits, teacher_logits.detach(), weight,
                                     torch.tensor(kinds), alpha, chunk, stats)
    if loss != "distillm2":  # baselines weigh both sides equally: the mean of the two
        total = total / 2
    div = stats["div"].detach() / lengths
    kl = stats["kl"].detach() / lengths
    return LossOutput(total, div[:n_pairs].mean(), div[n_pairs:].mean(), kl[:n_pairs].mean(), kl[n_pairs:].mean(),
                      alpha[:n_pairs].mean(), alpha[n_pairs:].mean())


def dense_distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                       n_pairs: int, loss: str = "distillm2", beta: float = 1.0, alpha1=0.1, alpha2=0.1,
                       jsd_lambda: float = 0.5) -> torch.Tensor:
    """The direct full-tensor formulation with autograd (as the reference implementation writes it):
    the baseline for the memory benchmark and the ground truth for tests (run it in float64)."""
    mask = (targets != IGNORE).to(student_logits.dtype)
    lq = torch.log_softmax(student_logits, -1)
    lp = torch.log_softmax(teacher_logits.detach(), -1)
    n = student_logits.shape[0]

    def per_row(x):
        return torch.as_tensor(x, dtype=lq.dtype, device=lq.device).expand(n_pairs)

    def skl(a):
        a = a[:, None, None]
        lm = torch.logsumexp(torch.stack([torch.log(a) + lp_, torch.log1p(-a) + lq_]), 0)
        return (lp_.exp() * (lp_ - lm)).sum(-1)

    def srkl(a):
        a = a[:, None, None]
        lm = torch.logsumexp(torch.stack([torch.log1p(-a) + lp_, torch.log(a) + lq_.detach()]), 0)
        return (lq_.exp() * (lq_ - lm)).sum(-1)

    def jsd(lam):
        lam = lam[:, None, None]
        lm = torch.logsumexp(torch.stack([torch.log(lam) + lp_, torch.log1p(-lam) + lq_]), 0)
        return lam[..., 0] * (lp_.exp() * (lp_ - lm)).sum(-1) + (1 - lam[..., 0]) * (lq_.exp() * (lq_ - lm)).sum(-1)

    def seq_mean(d, m):
        return (d * m).sum(-1) / m.sum(-1)

    out = []
    for half, a_skl, a_srkl in ((slice(0, n_pairs), per_row(alpha1), per_row(alpha2)),
                                (slice(n_pairs, n), per_row(alpha1), per_row(alpha2))):
        lq_, lp_, m = lq[half], lp[half], mask[half]
        zero = torch.zeros(n_pairs, dtype=lq.dtype, device=lq.device)
        if loss == "distillm2":
            out.append(seq_mean(skl(a_skl) if half.start == 0 else srkl(a_srkl), m))
        else:
            d = {"fkl": lambda: skl(zero), "rkl": lambda: srkl(zero), "skl": lambda: skl(a_skl),
                 "srkl": lambda: srkl(a_srkl), "jsd": lambda: jsd(per_row(jsd_lambda))}[loss]()
            out.append(seq_mean(d, m))
    if loss == "distillm2":
        return ((2 - beta) * out[0] + beta * out[1]).mean()
    return (out[0] + out[1]).mean() / 2

