import math

import pytest
import torch

from mlcnn_core.optim import PaperRMSprop


def test_one_step_matches_section_2_5_by_hand():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 3.0]))
    g = torch.tensor([0.1, -4.0, 0.0, 20.0])
    w.grad = g.clone()
    opt = PaperRMSprop([w], lr=0.05, lr_max=0.1)
    opt.step()
    for i in range(4):
        msq = 0.9 * 1.0 + 0.1 * g[i].item() ** 2
        rate = min(0.1, 0.05 / math.sqrt(msq))
        expected = [1.0, -2.0, 0.5, 3.0][i] - rate * g[i].item()
        assert w[i].item() == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert torch.allclose(opt.state[w]["msq"], 0.9 + 0.1 * g**2)


def test_two_steps_and_several_parameters_match_a_loop():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(5))]
    reference = [p.detach().clone() for p in params]
    msq = [torch.ones_like(p) for p in params]
    opt = PaperRMSprop(params, lr=0.01, lr_max=0.02)
    for _ in range(2):
        grads = [torch.randn_like(p) * 3 for p in params]
        for p, gr in zip(params, grads, strict=True):
            p.grad = gr.clone()
        opt.step()
        for i, gr in enumerate(grads):
            msq[i] = 0.9 * msq[i] + 0.1 * gr**2
            reference[i] -= torch.minimum(torch.full_like(gr, 0.02), 0.01 / msq[i].sqrt()) * gr
    for p, r in zip(params, reference, strict=True):
        assert torch.allclose(p.detach(), r, atol=1e-6)


def test_paper_defaults_cap_small_msq_at_lr_max():
    """With α0 = α_max the rate is α_max whenever Msq ≤ 1: plain SGD (what the paper's numbers imply)."""
    w = torch.nn.Parameter(torch.tensor([0.0]))
    w.grad = torch.tensor([0.01])
    PaperRMSprop([w], lr=0.01, lr_max=0.01).step()
    assert w.item() == pytest.approx(-0.01 * 0.01)


def test_rejects_bad_rates():
    with pytest.raises(ValueError):
        PaperRMSprop([torch.nn.Parameter(torch.zeros(1))], lr=0)
