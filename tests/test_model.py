import math

import pytest
import torch

from mlcnn_core.model import build_model, fold_batchnorm, grow_labels, init_paper
from mlcnn_core.spec import ARCHS, trunk_stride


def convs(model):
    return [m for m in model.trunk if isinstance(m, torch.nn.Conv2d)]


def test_paper_architecture_is_table_1():
    model = build_model("paper", num_labels=115, norm=False, init="paper")
    c = convs(model)
    assert len(c) == 16
    assert (c[0].out_channels, c[0].kernel_size, c[0].stride, c[0].padding) == (64, (7, 7), (2, 2), (3, 3))
    assert (c[1].out_channels, c[1].stride, c[1].padding) == (128, (2, 2), (1, 1))
    assert [m.out_channels for m in c[2:6]] == [128] * 4
    assert [m.out_channels for m in c[6:11]] == [256] * 5
    assert [m.out_channels for m in c[11:16]] == [512] * 5
    assert all(m.kernel_size == (3, 3) and m.padding == (1, 1) for m in c[1:])
    pools = [m for m in model.trunk if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.kernel_size == 3 and p.stride == 2 for p in pools)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    fcs = model.head.fcs
    assert [(f.in_features, f.out_features) for f in fcs] == [(512, 4096), (4096, 4096), (4096, 115)]
    assert model.head.dropout.p == 0.5
    assert build_model("paper", num_labels=7, norm=False).num_labels == 7


def test_forms_share_storage_and_agree_on_a_one_by_one_map():
    torch.manual_seed(0)
    model = build_model("tiny", num_labels=5).eval()
    fc = model.head.fcs[0]
    assert fc.weight[:, :, None, None].data_ptr() == fc.weight.data_ptr()
    # a 32×32 input gives the tiny trunk a 1×1 map, so GAP is the identity
    x = torch.randn(3, 3, 32, 32)
    assert model.trunk(x).shape[-2:] == (1, 1)
    maps = model.confidence_maps(x)
    assert torch.allclose(maps[:, :, 0, 0], model(x), atol=1e-6)
    # Editing the FC weight changes the test form too: no copy exists.
    with torch.no_grad():
        model.head.fcs[-1].weight.add_(1.0)
    assert torch.allclose(model.confidence_maps(x)[:, :, 0, 0], model(x), atol=1e-5)
    assert not torch.allclose(model.confidence_maps(x), maps)


def test_test_form_gives_one_map_per_label():
    model = build_model("paper", num_labels=11, norm=False).eval()
    with torch.no_grad():
        maps = model.confidence_maps(torch.zeros(1, 3, 256, 320))
    assert maps.shape[:2] == (1, 11) and maps.shape[2] == 7


def test_paper_init_glorot_with_biases_one_except_first_and_last():
    model = build_model("paper", num_labels=20, norm=False, init="paper")
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 19
    for i, m in enumerate(layers):
        expected = 0.0 if i in (0, len(layers) - 1) else 1.0
        assert torch.all(m.bias == expected), i
        fan_in = m.weight[0].numel()
        fan_out = m.weight.shape[0] * (m.weight[0, 0].numel())
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert m.weight.abs().max() <= bound + 1e-6
        assert m.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_paper_init_ignores_batchnorm():
    model = build_model("tiny", num_labels=3, norm=True)
    init_paper(model)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)


def test_folded_batchnorm_matches_eval_mode():
    torch.manual_seed(1)
    model = build_model("compact", num_labels=4)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, 64, 64))
    model.eval()
    x = torch.randn(2, 3, 96, 80)
    folded = fold_batchnorm(model.trunk)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded)
    assert torch.allclose(folded(x), model.trunk(x), atol=1e-4)


def test_grow_labels_keeps_old_rows():
    model = build_model("tiny", num_labels=3)
    old_w = model.head.fcs[-1].weight.detach().clone()
    old_b = model.head.fcs[-1].bias.detach().clone()
    grow_labels(model, 2)
    assert model.num_labels == 5
    assert torch.equal(model.head.fcs[-1].weight[:3], old_w)
    assert torch.equal(model.head.fcs[-1].bias[:3], old_b)


def test_every_arch_builds_and_runs():
    for name in ARCHS:
        model = build_model(name, num_labels=3).eval()
        with torch.no_grad():
            assert model(torch.zeros(1, 3, 256, 256)).shape == (1, 3)
        assert trunk_stride(model.spec) >= 16
