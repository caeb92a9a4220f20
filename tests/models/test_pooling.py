from __future__ import annotations

import pytest
import torch

from landmark.models.pooling import GeM, create_pooling, gem, pooling_names


def test_gem_p1_is_average_pooling() -> None:
    x = torch.rand(2, 5, 4, 3) + 0.1
    torch.testing.assert_close(gem(x, p=1.0), x.mean(dim=(2, 3)))


def test_gem_large_p_approaches_max_pooling() -> None:
    x = torch.rand(2, 5, 4, 3) + 0.1
    assert torch.allclose(gem(x, p=200.0), x.amax(dim=(2, 3)), rtol=0.02)
    # and it is monotone in p: GeM(3) lies between mean and max
    g3 = gem(x, p=3.0)
    assert torch.all(g3 >= x.mean(dim=(2, 3)) - 1e-6) and torch.all(g3 <= x.amax(dim=(2, 3)) + 1e-6)


def test_gem_hand_value() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    expected = ((1 + 8 + 27 + 64) / 4) ** (1 / 3)
    assert gem(x, p=3.0).item() == pytest.approx(expected, rel=1e-6)


def test_gem_module_learns_p() -> None:
    module = GeM(p=3.0)
    x = torch.rand(2, 4, 3, 3, requires_grad=True)
    module(x).sum().backward()
    assert module.p.grad is not None and module.p.grad.abs().item() > 0
    assert x.grad is not None and x.grad.shape == x.shape


def test_gem_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match="feature map"):
        gem(torch.rand(3, 4))


@pytest.mark.parametrize("name", pooling_names())
def test_every_pooling_shape(name: str) -> None:
    assert create_pooling(name)(torch.rand(2, 7, 5, 4)).shape == (2, 7)


def test_unknown_pooling() -> None:
    with pytest.raises(ValueError, match="unknown pooling"):
        create_pooling("median")
