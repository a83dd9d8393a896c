import math

import torch

from mlcnn_core.loss import multilabel_softmax_loss


def by_hand(logits, targets):
    total, n = 0.0, 0
    for row, t in zip(logits.tolist(), targets.tolist(), strict=True):
        if not any(t):
            continue
        num = sum(math.exp(c) for c, y in zip(row, t, strict=True) if y)
        den = sum(math.exp(c) for c in row)
        total += -math.log(num / den)
        n += 1
    return total / n


def test_matches_section_2_3_formula():
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    targets = torch.tensor([[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [1, 1, 1, 1, 1],
                            [0, 0, 0, 0, 1], [1, 0, 1, 0, 1], [0, 0, 1, 0, 0]], dtype=torch.float32)
    loss, skipped = multilabel_softmax_loss(logits, targets)
    assert skipped == 0
    assert abs(loss.item() - by_hand(logits, targets)) < 1e-5


def test_single_label_is_cross_entropy():
    logits = torch.randn(4, 7)
    labels = torch.tensor([0, 3, 6, 2])
    targets = torch.nn.functional.one_hot(labels, 7).float()
    loss, _ = multilabel_softmax_loss(logits, targets)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, labels), atol=1e-6)


def test_unlabelled_images_are_left_out_and_counted():
    logits = torch.randn(3, 4, requires_grad=True)
    targets = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]], dtype=torch.float32)
    loss, skipped = multilabel_softmax_loss(logits, targets)
    assert skipped == 1
    assert abs(loss.item() - by_hand(logits.detach(), targets)) < 1e-5
    loss.backward()
    assert torch.all(logits.grad[1] == 0)
    none, skipped = multilabel_softmax_loss(logits, torch.zeros(3, 4))
    assert skipped == 3 and none.item() == 0.0 and none.requires_grad


def test_stable_for_large_outputs():
    logits = torch.tensor([[1000.0, -1000.0, 999.0]])
    loss, _ = multilabel_softmax_loss(logits, torch.tensor([[0.0, 0.0, 1.0]]))
    assert torch.isfinite(loss) and abs(loss.item() - math.log(1 + math.exp(1))) < 1e-4


def test_all_labels_true_gives_zero_loss():
    loss, _ = multilabel_softmax_loss(torch.randn(2, 3), torch.ones(2, 3))
    assert abs(loss.item()) < 1e-6
