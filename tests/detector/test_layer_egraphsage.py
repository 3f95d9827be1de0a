import pytest
import torch

from detector.layers import EGraphSAGEConv


def _graph(n=7, e=15, f=4, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, f, generator=g), torch.randint(0, n, (2, e), generator=g), torch.randn(e, d, generator=g)


def test_shapes_and_repr():
    x, ei, ea = _graph()
    conv = EGraphSAGEConv(4, 16, edge_dim=3)
    out = conv(x, ei, ea)
    assert out.shape == (7, 16)
    assert (out >= 0).all()  # ReLU update
    assert repr(conv) == "EGraphSAGEConv(4, 16, edge_dim=3, aggr='mean')"
    assert EGraphSAGEConv(4, 16, edge_dim=3, act=False)(x, ei, ea).min() < 0


def test_mean_aggregation_matches_formula():
    x, ei, ea = _graph()
    conv = EGraphSAGEConv(4, 5, edge_dim=3)
    msg = conv.lin_msg(torch.cat([x[ei[0]], ea], -1))
    neigh = torch.zeros(7, 5).index_add_(0, ei[1], msg)
    cnt = torch.bincount(ei[1], minlength=7).clamp_min(1).unsqueeze(-1)
    expect = torch.relu(conv.lin_upd(torch.cat([x, neigh / cnt], -1)))
    assert torch.allclose(conv(x, ei, ea), expect, atol=1e-5)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("aggr", ["mean", "sum", "max"])
@pytest.mark.parametrize("edge_dim", [0, 3])
def test_aggregations_match_formula_with_and_without_autograd(aggr, edge_dim, grad):
    """Without autograd mean/sum are aggregated before W_1 (linear), with it and for max per edge
    message: every path is the formula."""
    x, ei, ea = _graph()
    conv = EGraphSAGEConv(4, 5, edge_dim=edge_dim, aggr=aggr)
    with torch.no_grad():
        msg = conv.lin_msg(torch.cat([x[ei[0]], ea], -1) if edge_dim else x[ei[0]])
        if aggr == "max":
            neigh = torch.zeros(7, 5).index_reduce_(0, ei[1], msg, "amax", include_self=False)
        else:
            neigh = torch.zeros(7, 5).index_add_(0, ei[1], msg)
            if aggr == "mean":
                neigh /= torch.bincount(ei[1], minlength=7).clamp_min(1).unsqueeze(-1)
        expect = torch.relu(conv.lin_upd(torch.cat([x, neigh], -1)))
    with torch.set_grad_enabled(grad):
        got = conv(x, ei, ea if edge_dim else None)
    assert torch.allclose(got, expect, atol=1e-5)


def test_permutation_equivariance():
    x, ei, ea = _graph()
    conv = EGraphSAGEConv(4, 8, edge_dim=3)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(7)
    out = conv(x, ei, ea)
    # relabel nodes: new node i is old node perm[i]
    out_p = conv(x[perm], inv[ei], ea)
    assert torch.allclose(out_p, out[perm], atol=1e-5)
    # edge order does not matter either
    eperm = torch.randperm(15, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(conv(x, ei[:, eperm], ea[eperm]), out, atol=1e-5)


def test_gradients_flow_to_all_parameters_and_inputs():
    x, ei, ea = _graph()
    x.requires_grad_(True)
    ea.requires_grad_(True)
    conv = EGraphSAGEConv(4, 8, edge_dim=3)
    conv(x, ei, ea).sum().backward()
    for name, p in conv.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert ea.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


def test_isolated_node_gets_zero_neighbourhood():
    x = torch.randn(3, 2)
    ei = torch.tensor([[0], [1]])
    conv = EGraphSAGEConv(2, 4, edge_dim=1, act=False)
    out = conv(x, ei, torch.ones(1, 1))
    expect = conv.lin_upd(torch.cat([x[2:], torch.zeros(1, 4)], -1))
    assert torch.allclose(out[2:], expect, atol=1e-6)


@pytest.mark.parametrize("kwargs,args,match", [
    (dict(edge_dim=3), lambda x, ei, ea: (x, ei, ea[:, :2]), "set edge_dim=2"),
    (dict(edge_dim=3), lambda x, ei, ea: (x, ei, None), "edge_attr is required"),
    (dict(edge_dim=0), lambda x, ei, ea: (x, ei, ea), "set edge_dim=3"),
    (dict(edge_dim=3), lambda x, ei, ea: (x[:, :3], ei, ea), "set in_channels=3"),
    (dict(edge_dim=3), lambda x, ei, ea: (x, ei, ea[:4]), "4 rows"),
])
def test_size_mismatch_raises(kwargs, args, match):
    x, ei, ea = _graph()
    conv = EGraphSAGEConv(4, 8, **kwargs)
    with pytest.raises(ValueError, match=match):
        conv(*args(x, ei, ea))


def test_bad_constructor_values():
    with pytest.raises(ValueError, match="edge_dim"):
        EGraphSAGEConv(4, 8, edge_dim=-1)
    with pytest.raises(ValueError, match="in_channels"):
        EGraphSAGEConv(0, 8)
