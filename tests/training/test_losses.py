import pytest
import torch

from training.losses import EdgeDGI, GradNormWeighter, info_nce


def test_info_nce_lower_for_aligned_pairs():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 16, generator=g)
    aligned = info_nce(a, a + 0.05 * torch.randn(64, 16, generator=g))
    shuffled = info_nce(a, a[torch.randperm(64, generator=g)])
    random = info_nce(a, torch.randn(64, 16, generator=g))
    assert aligned < random and aligned < shuffled
    assert aligned < 1.0 and random > 3.0  # chance level is about log(64) = 4.16


def test_info_nce_validation():
    with pytest.raises(ValueError, match="same shape"):
        info_nce(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.zeros(3, 4), torch.zeros(3, 4), temperature=0)


def test_dgi_discriminates_after_training():
    torch.manual_seed(0)
    dgi = EdgeDGI(8)
    real = torch.randn(200, 8) + 2.0
    corrupt = torch.randn(200, 8) - 2.0
    opt = torch.optim.Adam(dgi.parameters(), lr=0.05)
    first = float(dgi(real, corrupt))
    for _ in range(60):
        opt.zero_grad()
        loss = dgi(real, corrupt)
        loss.backward()
        opt.step()
    assert float(loss) < first and float(loss) < 0.2


def _tasks():
    torch.manual_seed(0)
    shared = torch.nn.Linear(4, 4)
    x = torch.randn(32, 4)
    h = shared(x)
    return shared, {"a": h.pow(2).mean() * 10.0, "b": h.abs().mean() * 0.1}


def test_gradnorm_moves_weights_and_fixed_does_not():
    shared, losses = _tasks()
    gn = GradNormWeighter(["a", "b"], mode="gradnorm", lr=0.1)
    for _ in range(5):
        shared_, losses = _tasks()
        total = gn.combine(losses, shared_.weight)
        total.backward()
    w = gn.weights()
    assert abs(sum(w.values()) - 2.0) < 1e-5
    assert w["b"] > w["a"]  # the task with the much smaller gradient gets more weight
    fx = GradNormWeighter(["a", "b"], mode="fixed")
    _, losses = _tasks()
    fx.combine(losses, shared.weight)
    assert fx.weights() == {"a": 1.0, "b": 1.0}
    with pytest.raises(ValueError, match="gradnorm"):
        GradNormWeighter(["a"], mode="adaptive")
