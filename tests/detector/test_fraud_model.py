"""Fraud model: the time-aware relational attention layer, synthesised negatives, losses, heads."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.fraud.conv import TimeRelAttnConv
from detector.fraud.model import (FraudModel, FraudModelConfig, contrastive_loss, focal_loss,
                                  synthesize)
from ingest.fraud.data import read_transactions, tumbling
from ingest.fraud.graph import EDGE_FEATURES, FEATURE_GROUPS, HeteroGraphBuilder
from training.fraud.simulate import simulate


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    p = tmp_path_factory.mktemp("sim") / "sim.parquet"
    import pyarrow.parquet as pq

    pq.write_table(simulate(n_customers=120, n_terminals=200, n_days=12, seed=1), p)
    b = HeteroGraphBuilder()
    g = None
    for w in tumbling(read_transactions([str(p)]), 86400):
        g = b.build(w)
    return g


def test_conv_shapes_repr_and_validation():
    conv = TimeRelAttnConv(8, 6, 16, edge_dim=5, heads=2)
    assert repr(conv) == "TimeRelAttnConv(8, 6, 16, edge_dim=5, heads=2, tau=3600.0)"
    xs, xd = torch.randn(4, 8), torch.randn(3, 6)
    ei = torch.tensor([[0, 1, 2, 3, 0], [0, 0, 1, 2, 2]])
    out = conv(xs, xd, ei, torch.randn(5, 5), torch.rand(5) * 1000)
    assert out.shape == (3, 16)
    out.sum().backward()
    assert conv.beta.grad is not None and conv.att.grad is not None
    with pytest.raises(ValueError, match="edge_dim"):
        conv(xs, xd, ei, torch.randn(5, 4), torch.rand(5))
    with pytest.raises(ValueError, match="divisible"):
        TimeRelAttnConv(8, 6, 15, edge_dim=5, heads=2)


def test_conv_time_gap_modulates_attention():
    torch.manual_seed(0)
    conv = TimeRelAttnConv(4, 4, 4, edge_dim=2, heads=1)
    with torch.no_grad():
        conv.beta.fill_(3.0)                       # strong decay
    xs, xd = torch.randn(2, 4), torch.randn(1, 4)
    ei = torch.tensor([[0, 1], [0, 0]])
    ea = torch.zeros(2, 2)
    only0 = conv(xs[:1], xd, ei[:, :1], ea[:1], torch.zeros(1))
    only1 = conv(xs[1:], xd, torch.tensor([[0], [0]]), ea[1:], torch.zeros(1))
    # neighbour 1 is far in the past: the mix is dominated by neighbour 0, and vice versa
    recent0 = conv(xs, xd, ei, ea, torch.tensor([0.0, 30 * 86400.0]))
    recent1 = conv(xs, xd, ei, ea, torch.tensor([30 * 86400.0, 0.0]))
    assert torch.dist(recent0, only0) < torch.dist(recent0, only1)
    assert torch.dist(recent1, only1) < torch.dist(recent1, only0)


def test_conv_permutation_of_edges_is_invariant():
    torch.manual_seed(0)
    conv = TimeRelAttnConv(4, 4, 8, edge_dim=3)
    xs, xd = torch.randn(5, 4), torch.randn(3, 4)
    ei = torch.tensor([[0, 1, 2, 3, 4, 0], [0, 0, 1, 1, 2, 2]])
    ea, dt = torch.randn(6, 3), torch.rand(6) * 1e4
    p = torch.randperm(6)
    torch.testing.assert_close(conv(xs, xd, ei, ea, dt), conv(xs, xd, ei[:, p], ea[p], dt[p]))


def _raw(g):
    st = g["customer", "pays", "terminal"]
    return st.edge_attr, st.edge_index[0], st.edge_index[1]


def _others(kind):
    return [i for i in range(len(EDGE_FEATURES)) if i not in FEATURE_GROUPS[kind] and
            not (kind == "amount" and i in (10, 11, 12))]


def test_synth_amount_changes_only_amount_and_consistent_averages(graph):
    ea, src, dst = _raw(graph)
    e2, s2, d2 = synthesize(ea, src, dst, "amount", torch.Generator().manual_seed(0))
    assert torch.equal(s2, src) and torch.equal(d2, dst)
    o = _others("amount")
    assert torch.equal(e2[:, o], ea[:, o])
    ratio = torch.expm1(e2[:, 0]) / torch.expm1(ea[:, 0])
    ok = torch.expm1(ea[:, 0]) > 1
    assert bool(((ratio[ok] >= 2 - 1e-3) & (ratio[ok] <= 6 + 1e-3)).all())
    # customer averages include the current amount: n * avg' - n * avg == a' - a
    nb = torch.expm1(ea[:, 7:10])
    delta = (torch.expm1(e2[:, 10:13]) - torch.expm1(ea[:, 10:13])) * nb
    torch.testing.assert_close(delta, (torch.expm1(e2[:, 0]) - torch.expm1(ea[:, 0])).unsqueeze(-1).expand_as(delta),
                               rtol=1e-3, atol=1e-2)
    assert bool((e2[:, 1] > ea[:, 1]).all())       # amount over the customer's usual: always up


def test_synth_terminal_moves_to_another_terminal_with_its_features(graph):
    ea, src, dst = _raw(graph)
    e2, s2, d2 = synthesize(ea, src, dst, "terminal", torch.Generator().manual_seed(0))
    assert torch.equal(s2, src)
    assert (d2 != dst).float().mean() > 0.9
    o = _others("terminal")
    assert torch.equal(e2[:, o], ea[:, o])
    g = FEATURE_GROUPS["terminal"]
    # every synthesised terminal block is the block of a real edge at that terminal
    for i in range(0, len(d2), max(1, len(d2) // 50)):
        donors = (dst == d2[i]).nonzero().flatten()
        assert any(torch.equal(e2[i, g], ea[j, g]) for j in donors)


def test_synth_time_changes_only_time_of_day(graph):
    ea, src, dst = _raw(graph)
    e2, _, d2 = synthesize(ea, src, dst, "time", torch.Generator().manual_seed(0))
    assert torch.equal(d2, dst)
    changed = [i for i in range(len(EDGE_FEATURES)) if not torch.equal(e2[:, i], ea[:, i])]
    assert changed == [3, 4, 6]
    torch.testing.assert_close(e2[:, 3] ** 2 + e2[:, 4] ** 2, torch.ones(len(e2)))
    with pytest.raises(ValueError, match="kind"):
        synthesize(ea, src, dst, "device", torch.Generator())


@pytest.mark.parametrize("use_graph", [True, False])
def test_model_forward_losses_and_gradients(graph, use_graph):
    torch.manual_seed(0)
    m = FraudModel(FraudModelConfig(hidden=16, use_graph=use_graph))
    logits, z, hc, ht = m(graph)
    E = graph["customer", "pays", "terminal"].num_edges
    assert logits.shape == (E,) and z.shape == (E, 16)
    assert (hc is None) == (not use_graph)
    lab = graph["customer", "pays", "terminal"].edge_label.float()
    loss = focal_loss(logits, lab) + contrastive_loss(m, graph, hc, ht, z, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    if use_graph:
        assert m.to_term[0].lin_src.weight.grad.abs().sum() > 0


def test_focal_loss_downweights_easy_examples():
    y = torch.tensor([1.0, 0.0])
    easy = focal_loss(torch.tensor([4.0, -4.0]), y)
    hard = focal_loss(torch.tensor([-1.0, 1.0]), y)
    assert easy < 0.01 * hard
    bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([4.0, -4.0]), y)
    assert easy < bce


def test_contrastive_training_separates_real_from_synthesised(graph):
    """A few steps of the InfoNCE objective alone must rank real above fakes (quality floor)."""
    torch.manual_seed(0)
    m = FraudModel(FraudModelConfig(hidden=16))
    st = graph["customer", "pays", "terminal"]
    m.fit_normalizer(st.edge_attr.numpy(), graph["customer"].x.numpy(), graph["terminal"].x.numpy())
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        _, z, hc, ht = m(graph)
        loss = contrastive_loss(m, graph, hc, ht, z, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.6 * np.log(4)   # chance level is log(1 + 3 fakes)


def test_edge_batch_subgraph_gives_full_window_embeddings(graph):
    """Mini-batch training is exact: a batch's embeddings equal the full-window ones."""
    from detector.fraud.model import edge_batch_subgraph

    torch.manual_seed(0)
    m = FraudModel(FraudModelConfig(hidden=16)).eval()
    with torch.no_grad():
        full_logits, full_z, _, _ = m(graph)
        batch = torch.randperm(graph["customer", "pays", "terminal"].num_edges)[:40]
        sub, pos = edge_batch_subgraph(graph, batch)
        logits, z, _, _ = m(sub)
    assert sub["customer", "pays", "terminal"].num_edges < graph["customer", "pays", "terminal"].num_edges
    torch.testing.assert_close(z[pos], full_z[batch], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits[pos], full_logits[batch], rtol=1e-5, atol=1e-5)
