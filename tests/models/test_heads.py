"""ArcFace / CosFace logits against hand-computed values, and shapes for every registered head."""

from __future__ import annotations

import math

import pytest
import torch

from landmark.models.heads import arcface_logits, cosface_logits, cosine_logits, create_head, head_names


def test_cosine_logits_hand_values() -> None:
    emb = torch.tensor([[3.0, 4.0]])
    weight = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    torch.testing.assert_close(cosine_logits(emb, weight), torch.tensor([[0.6, 0.8]]))


def test_cosface_hand_values() -> None:
    cos = torch.tensor([[0.6, 0.8], [0.1, -0.2]])
    labels = torch.tensor([0, 1])
    expected = torch.tensor([[30 * (0.6 - 0.3), 30 * 0.8], [30 * 0.1, 30 * (-0.2 - 0.3)]])
    torch.testing.assert_close(cosface_logits(cos, labels, s=30.0, m=0.3), expected)


def test_arcface_hand_values() -> None:
    cos = torch.tensor([[0.6, 0.8]])
    labels = torch.tensor([1])
    # target: cos(acos(0.8) + 0.3) = 0.8 cos 0.3 - 0.6 sin 0.3
    target = 0.8 * math.cos(0.3) - 0.6 * math.sin(0.3)
    expected = torch.tensor([[30 * 0.6, 30 * target]])
    torch.testing.assert_close(arcface_logits(cos, labels, s=30.0, m=0.3), expected)
    assert math.isclose(target, math.cos(math.acos(0.8) + 0.3), rel_tol=1e-12)


def test_arcface_fallback_beyond_pi() -> None:
    # theta + m > pi: cos(theta) = -0.99 -> theta ~ 3.0; fallback cos - m * sin(pi - m)
    cos = torch.tensor([[-0.99, 0.0]])
    out = arcface_logits(cos, torch.tensor([0]), s=1.0, m=0.3)
    assert out[0, 0].item() == pytest.approx(-0.99 - 0.3 * math.sin(math.pi - 0.3), rel=1e-6)
    assert out[0, 1].item() == pytest.approx(0.0)


def test_margin_lowers_only_the_target() -> None:
    cos = torch.rand(4, 5) * 1.6 - 0.8
    labels = torch.tensor([0, 1, 2, 3])
    for fn in (arcface_logits, cosface_logits):
        out = fn(cos, labels, 10.0, 0.3)
        plain = 10.0 * cos
        mask = torch.nn.functional.one_hot(labels, 5).bool()
        assert torch.all(out[mask] < plain[mask])
        torch.testing.assert_close(out[~mask], plain[~mask])


@pytest.mark.parametrize("name", head_names())
def test_head_forward_backward_shapes(name: str) -> None:
    head = create_head(name, dim=16, num_classes=7)
    emb = torch.randn(5, 16, requires_grad=True)
    logits = head(emb, torch.tensor([0, 1, 2, 3, 6]))
    assert logits.shape == (5, 7)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3, 6])).backward()
    assert emb.grad is not None and head.weight.grad is not None and head.weight.grad.shape == (7, 16)


def test_head_errors() -> None:
    with pytest.raises(ValueError, match="unknown head"):
        create_head("softmax", 4, 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        create_head("arcface", 4, 1)
    with pytest.raises(ValueError, match="labels must have shape"):
        cosface_logits(torch.zeros(2, 3), torch.tensor([0]))


def test_imprint_sets_class_weights_to_normalised_mean_embeddings() -> None:
    head = create_head("arcface", 2, 3)
    before = head.weight.detach().clone()
    embeddings = torch.tensor([[2.0, 0.0], [0.0, 5.0], [3.0, 4.0]])
    # class 0: mean of (1, 0) and (0, 1) -> (1, 1)/sqrt2; class 1: (0.6, 0.8); class 2: no examples, unchanged
    assert head.imprint(embeddings, torch.tensor([0, 0, 1])) == 2
    s = 2**-0.5
    torch.testing.assert_close(head.weight[0], torch.tensor([s, s]))
    torch.testing.assert_close(head.weight[1], torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(head.weight[2], before[2])
    # the only example of class 1 now has cosine 1 with its class, those of class 0 cos(45 deg)
    torch.testing.assert_close(
        head.cosine(embeddings)[:, :2], torch.tensor([[s, 0.6], [s, 0.8], [0.6 * s + 0.8 * s, 1.0]])
    )
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        head.imprint(embeddings, torch.tensor([0, 3, 1]))
    with pytest.raises(ValueError, match=r"embeddings must be \(N, 2\)"):
        head.imprint(torch.zeros(3, 4), torch.tensor([0, 0, 1]))
