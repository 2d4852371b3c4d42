"""The chunked DistiLLM-2 loss against a direct float64 formulation, and its defining properties."""

import pytest
import torch

from fsku.distill.losses import (
    IGNORE,
    KINDS,
    adaptive_alphas,
    adaptive_pair_alphas,
    dense_distill_loss,
    distill_loss,
    label_logprobs,
)

N_PAIRS, T, V = 2, 9, 40


def batch(seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2 * N_PAIRS, T, V, generator=g, dtype=torch.float64) * scale
    t = torch.randn(2 * N_PAIRS, T, V, generator=g, dtype=torch.float64) * scale
    targets = torch.randint(0, V, (2 * N_PAIRS, T), generator=g)
    targets[:, :3] = IGNORE      # prompt positions
    targets[1, 7:] = IGNORE      # padding
    targets[3, 5:] = IGNORE
    return z, t, targets


def grads(fn, z):
    z = z.clone().requires_grad_()
    loss = fn(z)
    loss.backward()
    return loss.detach(), z.grad


@pytest.mark.parametrize("loss", ["distillm2", *KINDS])
def test_matches_float64_reference_in_value_and_gradient(loss):
    z, t, tg = batch()
    kw = dict(loss=loss, beta=0.6, alpha1=torch.tensor([0.1, 0.3], dtype=torch.float64), alpha2=0.2, jsd_lambda=0.3)
    ours, g_ours = grads(lambda x: distill_loss(x, t, tg, N_PAIRS, chunk=2, **kw).loss, z)
    ref, g_ref = grads(lambda x: dense_distill_loss(x, t, tg, N_PAIRS, **kw), z)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12, abs=1e-12)
    assert torch.allclose(g_ours, g_ref, rtol=1e-9, atol=1e-12)
    assert g_ours[0, :2].abs().max() == 0 and g_ours[1, 7:].abs().max() == 0  # masked positions get nothing


@pytest.mark.parametrize("loss", ["distillm2", *KINDS])
def test_zero_with_zero_gradient_when_student_equals_teacher(loss):
    _, t, tg = batch(1)
    value, g = grads(lambda x: distill_loss(x, t, tg, N_PAIRS, loss=loss).loss, t)
    assert abs(value.item()) < 1e-12 and g.abs().max() < 1e-12


def test_skew_zero_is_plain_kl():
    z, t, tg = batch(2)
    for skewed, plain, key in (("skl", "fkl", "alpha1"), ("srkl", "rkl", "alpha2")):
        a, ga = grads(lambda x: distill_loss(x, t, tg, N_PAIRS, loss=skewed, **{key: 0.0}).loss, z)
        b, gb = grads(lambda x: distill_loss(x, t, tg, N_PAIRS, loss=plain).loss, z)
        assert a.item() == pytest.approx(b.item(), rel=1e-12) and torch.allclose(ga, gb, atol=1e-12)
    # and plain forward KL is what torch's kl_div computes on the response tokens
    mask = tg != IGNORE
    lq, lp = torch.log_softmax(z, -1), torch.log_softmax(t, -1)
    per_tok = (lp.exp() * (lp - lq)).sum(-1)
    expected = ((per_tok * mask).sum(-1) / mask.sum(-1)).mean()
    assert distill_loss(z, t, tg, N_PAIRS, loss="fkl").loss.item() == pytest.approx(expected.item(), rel=1e-12)


def test_no_gradient_through_the_detached_student_in_srkl():
    z, t, tg = batch(3)
    _, g_ours = grads(lambda x: distill_loss(x, t, tg, N_PAIRS, loss="srkl", alpha2=0.5).loss, z)
    mask = (tg != IGNORE).double()

    def srkl(x, detach):
        lq, lp = torch.log_softmax(x, -1), torch.log_softmax(t, -1)
        inner = lq.detach() if detach else lq
        lm = torch.logsumexp(torch.stack([torch.log(torch.tensor(0.5)) + lp, torch.log(torch.tensor(0.5)) + inner]), 0)
        d = (lq.exp() * (lq - lm)).sum(-1)
        return ((d * mask).sum(-1) / mask.sum(-1)).mean()

    _, g_detached = grads(lambda x: srkl(x, True), z)
    _, g_through = grads(lambda x: srkl(x, False), z)
    assert torch.allclose(g_ours, g_detached, atol=1e-12)
    assert (g_ours - g_through).abs().max() > 1e-3


def test_chunk_size_does_not_change_the_result_and_fp32_is_close():
    z, t, tg = batch(4)
    a, ga = grads(lambda x: distill_loss(x, t, tg, N_PAIRS, chunk=1).loss, z)
    b, gb = grads(lambda x: distill_loss(x, t, tg, N_PAIRS, chunk=1000).loss, z)
    assert a.item() == pytest.approx(b.item(), rel=1e-12) and torch.allclose(ga, gb, atol=1e-14)
    c, gc = grads(lambda x: distill_loss(x, t.float(), tg, N_PAIRS).loss, z.float())
    assert c.item() == pytest.approx(a.item(), rel=1e-5) and torch.allclose(gc.double(), ga, atol=1e-6)


def test_beta_weighs_the_two_terms():
    z, t, tg = batch(5)
    out = {b: distill_loss(z, t, tg, N_PAIRS, beta=b) for b in (0.0, 1.0, 2.0)}
    assert out[0.0].loss.item() == pytest.approx(2 * out[0.0].chosen_term.item(), rel=1e-12)
    assert out[2.0].loss.item() == pytest.approx(2 * out[2.0].rejected_term.item(), rel=1e-12)
    assert out[1.0].loss.item() == pytest.approx(out[1.0].chosen_term.item() + out[1.0].rejected_term.item(),
                                                 rel=1e-12)


def test_adaptive_alpha_moves_with_the_gap():
    gaps = torch.tensor([0.5, 0.2, 0.19, 0.05, 0.0, -0.1])
    alphas = adaptive_alphas(gaps, anchor=0.2, base=0.1)
    # at or above the anchor: the base skew; just below it: in between (1 - 0.9 * 0.2 / 0.19)
    assert alphas[0] == pytest.approx(0.1) and alphas[1] == pytest.approx(0.1, abs=1e-4)
    assert alphas[2] == pytest.approx(1 - 0.9 * 0.2 / 0.19, abs=1e-4)
    # a gap well below the anchor or closed: the minimum skew; a reversed gap: the base again
    assert alphas[3] == pytest.approx(0.01) and alphas[4] == pytest.approx(0.01) and alphas[5] == pytest.approx(0.1)
    z, t, tg = batch(6)
    base = distill_loss(z, t, tg, N_PAIRS, alpha1=0.1, alpha2=0.1)
    moved = distill_loss(z, t, tg, N_PAIRS, alpha1=torch.tensor([0.02, 0.1], dtype=torch.float64), alpha2=0.1)
    assert moved.alpha1.item() < base.alpha1.item() and moved.loss.item() != base.loss.item()


def test_label_logprobs_and_bad_input():
    z, _, tg = batch(7)
    lp = label_logprobs(z, tg, chunk=2)
    ref = torch.log_softmax(z, -1).gather(-1, tg.clamp(min=0)[..., None])[..., 0] * (tg != IGNORE)
    assert torch.allclose(lp.double(), ref, atol=1e-5)
    empty = tg.clone()
    empty[2] = IGNORE
    with pytest.raises(ValueError, match="no response tokens"):
        distill_loss(z, z, empty, N_PAIRS)
    with pytest.raises(ValueError, match="expected 2 x 3 rows"):
        distill_loss(z, z, tg, 3)


def test_adaptive_pair_alphas_follow_each_sequence():
    """Teacher sure of the answers; the student close on pair 0's chosen row, far on pair 1's: the
    first batch sets the anchors, then a sequence whose gap shrank below its anchor gets a smaller skew."""
    n_pairs, t_len, vocab = 2, 6, 10
    targets = torch.full((2 * n_pairs, t_len), 3)
    targets[:, :2] = IGNORE

    def logits(confidence):  # [rows] -> logits whose label (token 3) has about that probability
        x = torch.zeros(2 * n_pairs, t_len, vocab)
        c = torch.tensor(confidence)[:, None]
        x[..., 3] = torch.log(c * (vocab - 1) / (1 - c))
        return x

    teacher = logits([0.9, 0.9, 0.2, 0.2])
    start = logits([0.5, 0.5, 0.6, 0.6])         # both pairs equally far: gaps 0.4 (chosen), 0.4 (rejected)
    a1, a2, anchors = adaptive_pair_alphas(start, teacher, targets, n_pairs, 0.1, 0.1)
    assert anchors["chosen"] == pytest.approx(0.4, abs=1e-4) and anchors["rejected"] == pytest.approx(0.4, abs=1e-4)
    assert torch.allclose(a1, torch.tensor([0.1, 0.1]), atol=1e-3)
    later = logits([0.88, 0.5, 0.55, 0.6])       # pair 0 caught up on both sides, pair 1 did not
    a1, a2, same = adaptive_pair_alphas(later, teacher, targets, n_pairs, 0.1, 0.1, anchors)
    assert same == anchors
    assert a1[0] < 0.05 and a1[1] == pytest.approx(0.1, abs=1e-3)
    assert a2[0] < a2[1] and a2[1] == pytest.approx(0.1, abs=1e-3)
