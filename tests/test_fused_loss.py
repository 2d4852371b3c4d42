"""The fused loss (hidden states + LM head, logits never whole) against the dense float64 formulation
on the logits the heads give: values, gradients to the hidden states and to a trained head, every
loss name, per-pair skews, soft-capped and scaled heads."""

import pytest
import torch

from fsku.distill.fused import fused_distill_loss, fused_pair_alphas, hidden_label_logprobs
from fsku.distill.head import Head
from fsku.distill.losses import IGNORE, KINDS, adaptive_pair_alphas, dense_distill_loss, distill_loss, label_logprobs

N_PAIRS, T, H, HT, V = 2, 9, 6, 8, 40


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(2 * N_PAIRS, T, H, generator=g, dtype=torch.float64)
    w = torch.randn(V, H, generator=g, dtype=torch.float64)
    ht = torch.randn(2 * N_PAIRS, T, HT, generator=g, dtype=torch.float64)   # a wider teacher
    wt = torch.randn(V, HT, generator=g, dtype=torch.float64)
    targets = torch.randint(0, V, (2 * N_PAIRS, T), generator=g)
    targets[:, :3] = IGNORE      # prompt positions
    targets[1, 7:] = IGNORE      # padding
    targets[3, 5:] = IGNORE
    targets[2, 4] = IGNORE       # a gap inside a response
    return h, w, ht, wt, targets


def logits(h, head: Head):
    z = (h @ head.weight.T) * head.scale
    return z if head.softcap is None else head.softcap * torch.tanh(z / head.softcap)


@pytest.mark.parametrize("loss", ["distillm2", *KINDS])
@pytest.mark.parametrize("scale,softcap", [(1.0, None), (0.7, 5.0)])
def test_matches_the_dense_reference_in_value_and_both_gradients(loss, scale, softcap):
    h, w, ht, wt, tg = batch()
    kw = dict(loss=loss, beta=0.6, alpha1=torch.tensor([0.1, 0.3], dtype=torch.float64), alpha2=0.2, jsd_lambda=0.3)
    t_head = Head(wt, 1.3, 4.0 if softcap else None)

    hs, ws = h.clone().requires_grad_(), w.clone().requires_grad_()
    ours = fused_distill_loss(hs, Head(ws, scale, softcap), ht, t_head, tg, N_PAIRS, chunk=3, **kw)
    ours.loss.backward()

    hr, wr = h.clone().requires_grad_(), w.clone().requires_grad_()
    ref = dense_distill_loss(logits(hr, Head(wr, scale, softcap)), logits(ht, t_head), tg, N_PAIRS, **kw)
    ref.backward()

    assert ours.loss.item() == pytest.approx(ref.item(), rel=1e-12, abs=1e-12)
    assert torch.allclose(hs.grad, hr.grad, rtol=1e-9, atol=1e-12)
    assert torch.allclose(ws.grad, wr.grad, rtol=1e-9, atol=1e-12)
    assert hs.grad[:, :2].abs().max() == 0 and hs.grad[1, 7:].abs().max() == 0 and hs.grad[2, 4].abs().max() == 0
    # the logged terms are the logits path's
    same = distill_loss(logits(h, Head(w, scale, softcap)), logits(ht, t_head), tg, N_PAIRS, chunk=3, **kw)
    for f in ("chosen_term", "rejected_term", "kl_chosen", "kl_rejected", "alpha1", "alpha2"):
        assert getattr(ours, f).item() == pytest.approx(getattr(same, f).item(), rel=1e-10, abs=1e-12), f


def test_frozen_head_gets_no_gradient_and_chunking_does_not_change_the_loss():
    h, w, ht, wt, tg = batch(1)
    values = []
    for chunk in (1, 4, 1000):
        hs = h.clone().requires_grad_()
        out = fused_distill_loss(hs, Head(w), ht, Head(wt), tg, N_PAIRS, chunk=chunk)
        out.loss.backward()
        values.append((out.loss.item(), hs.grad))
    assert not w.requires_grad
    for v, g in values[1:]:
        assert v == pytest.approx(values[0][0], rel=1e-12) and torch.allclose(g, values[0][1], rtol=1e-10, atol=1e-14)


def test_float32_is_close_to_float64():
    h, w, ht, wt, tg = batch(2)
    exact = fused_distill_loss(h, Head(w), ht, Head(wt), tg, N_PAIRS).loss.item()
    approx = fused_distill_loss(h.float(), Head(w.float()), ht.float(), Head(wt.float()), tg, N_PAIRS).loss.item()
    assert approx == pytest.approx(exact, rel=1e-5)


def test_adaptive_skews_and_label_logprobs_equal_the_logits_path():
    h, w, ht, wt, tg = batch(3)
    z, zt = logits(h, Head(w)), logits(ht, Head(wt))
    assert torch.allclose(hidden_label_logprobs(h, Head(w), tg, chunk=5), label_logprobs(z, tg).to(torch.float32),
                          atol=1e-5)
    a1, a2, anchors = fused_pair_alphas(h, Head(w), ht, Head(wt), tg, N_PAIRS, 0.1, 0.2, chunk=5)
    b1, b2, ref = adaptive_pair_alphas(z, zt, tg, N_PAIRS, 0.1, 0.2)
    assert anchors == pytest.approx(ref, rel=1e-5)
    assert torch.allclose(a1.double(), b1.double(), atol=1e-5) and torch.allclose(a2.double(), b2.double(), atol=1e-5)


def test_bad_input_is_named():
    h, w, ht, wt, tg = batch()
    with pytest.raises(ValueError, match="vocabulary"):
        fused_distill_loss(h, Head(w), ht, Head(wt[:-1]), tg, N_PAIRS)
    with pytest.raises(ValueError, match="rows"):
        fused_distill_loss(h[:3], Head(w), ht[:3], Head(wt), tg[:3], N_PAIRS)
    tg = tg.clone()
    tg[0] = IGNORE
    with pytest.raises(ValueError, match="no response tokens"):
        fused_distill_loss(h, Head(w), ht, Head(wt), tg, N_PAIRS)


@pytest.mark.parametrize("arch", ["gemma_lora", "gemma_softcap_full", "qwen2_untied_full"])
def test_on_real_models_the_trainer_paths_agree(arch):
    """What ``DistillTrainer`` feeds the fused loss (the decoder's last hidden state through PEFT, the
    LM head with its config's soft-cap, a tied or untied head, trained or frozen) gives the loss and
    the gradients of the full-logits path."""
    from peft import LoraConfig, get_peft_model

    from fsku.distill.head import head_of
    from fsku.distill.trainer import last_hidden_state

    from conftest import tiny_gemma, tiny_qwen2

    if arch.startswith("gemma"):
        student, teacher = tiny_gemma(layers=2, seed=1, vocab=4096), tiny_gemma(layers=3, seed=2, vocab=4096)
        if arch == "gemma_softcap_full":
            for m in (student, teacher):
                m.config.final_logit_softcapping = 3.0
    else:
        student, teacher = tiny_qwen2(seed=1, vocab=4096), tiny_qwen2(layers=3, seed=2, vocab=4096)
    if arch == "gemma_lora":
        student = get_peft_model(student, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        for n, p in student.named_parameters():  # random-init LoRA B is zero: move it so its gradient is tested
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1)
    student.train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 4096, (4, 14), generator=g)
    attn = torch.ones_like(ids)
    attn[1, -3:] = 0
    targets = ids[:, 1:].clone()
    targets[:, :5] = IGNORE
    targets[1, -3:] = IGNORE
    targets = torch.cat([targets, torch.full((4, 1), IGNORE)], 1)
    first = 4
    kw = dict(loss="distillm2", beta=0.7, alpha1=0.1, alpha2=0.2, chunk=5)

    def grads():
        out = {n: p.grad.clone() for n, p in student.named_parameters() if p.requires_grad and p.grad is not None}
        student.zero_grad()
        return out

    hidden = last_hidden_state(student, ids, attn)[:, first:]
    with torch.no_grad():
        t_hidden = last_hidden_state(teacher, ids, attn)[:, first:]
    fused = fused_distill_loss(hidden, head_of(student), t_hidden, head_of(teacher), targets[:, first:], 2, **kw)
    fused.loss.backward()
    g_fused = grads()

    keep = ids.shape[1] - first
    z = student(input_ids=ids, attention_mask=attn, logits_to_keep=keep).logits
    with torch.no_grad():
        zt = teacher(input_ids=ids, attention_mask=attn, logits_to_keep=keep).logits
    ref = distill_loss(z, zt, targets[:, first:], 2, **kw)
    ref.loss.backward()
    g_ref = grads()

    assert fused.loss.item() == pytest.approx(ref.loss.item(), rel=1e-5)
    assert set(g_fused) == set(g_ref) and len(g_ref) > 0
    if arch == "gemma_lora":
        assert all("lora" in n for n in g_ref)
    else:  # full fine-tuning: the head (tied to the embedding for Gemma) is trained through the fused loss too
        assert any("embed_tokens" in n or "lm_head" in n for n in g_ref)
    for n in g_ref:
        assert torch.allclose(g_fused[n], g_ref[n], rtol=1e-4, atol=1e-7), n


def topk_of(z: torch.Tensor, k: int):
    """The cache's content for logits z: top-k ids and log-probs, and the exact log of the rest."""
    from fsku.distill.fused import TopK

    lp = torch.log_softmax(z, -1)
    val, ids = lp.topk(k, -1)
    rest = torch.logsumexp(lp.scatter(-1, ids, float("-inf")), -1)
    return TopK(ids.int(), val, rest)


@pytest.mark.parametrize("loss", ["distillm2", *KINDS])
def test_topk_teacher_with_every_token_is_the_exact_loss(loss):
    h, w, ht, wt, tg = batch(4)
    kw = dict(loss=loss, beta=0.6, alpha1=0.1, alpha2=0.2, jsd_lambda=0.3, chunk=4)
    exact_h = h.clone().requires_grad_()
    exact = fused_distill_loss(exact_h, Head(w), ht, Head(wt), tg, N_PAIRS, **kw)
    exact.loss.backward()
    cached_h = h.clone().requires_grad_()
    cached = fused_distill_loss(cached_h, Head(w), None, None, tg, N_PAIRS, teacher_topk=topk_of(ht @ wt.T, V), **kw)
    cached.loss.backward()
    assert cached.loss.item() == pytest.approx(exact.loss.item(), rel=1e-10, abs=1e-12)
    assert torch.allclose(cached_h.grad, exact_h.grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("loss", ["distillm2", *KINDS])
def test_topk_teacher_is_the_divergence_of_the_coarsened_distributions(loss):
    """Against autograd through an explicit construction: student log-probs gathered on the
    teacher's k tokens plus the logsumexp of the others, the teacher's k log-probs plus its rest."""
    h, w, ht, wt, tg = batch(5)
    k = 7
    t = topk_of(ht @ wt.T, k)
    kw = dict(loss=loss, beta=0.6, alpha1=0.1, alpha2=0.2, jsd_lambda=0.3)
    hs = h.clone().requires_grad_()
    ours = fused_distill_loss(hs, Head(w), None, None, tg, N_PAIRS, teacher_topk=t, chunk=5, **kw)
    ours.loss.backward()

    hr = h.clone().requires_grad_()
    lq = torch.log_softmax(hr @ w.T, -1)
    lq_rest = torch.logsumexp(lq.scatter(-1, t.ids.long(), float("-inf")), -1, keepdim=True)
    big_q = torch.cat([lq.gather(-1, t.ids.long()), lq_rest], -1)   # log_softmax of these is themselves
    big_p = torch.cat([t.logprobs, t.rest[..., None]], -1)
    ref = dense_distill_loss(big_q, big_p, tg, N_PAIRS, **kw)
    ref.backward()
    assert ours.loss.item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-12)
    assert torch.allclose(hs.grad, hr.grad, rtol=1e-8, atol=1e-12)
    if loss in ("fkl", "rkl"):  # merging outcomes never increases a KL: the cached loss is a lower bound
        exact = fused_distill_loss(h, Head(w), ht, Head(wt), tg, N_PAIRS, loss=loss).loss.item()
        assert ours.loss.item() <= exact + 1e-12
