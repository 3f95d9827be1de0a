import torch

from training.views import feature_view, structural_view, temporal_pairs


def test_structural_view_drops_edges_and_keeps_ids():
    ei = torch.randint(0, 20, (2, 500), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    kept, ids = structural_view(ei, 0.3, g)
    assert kept.shape[0] == 2 and 250 < kept.shape[1] < 450
    assert torch.equal(kept, ei[:, ids])
    kept2, _ = structural_view(ei, 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(kept, kept2)  # seeded
    _, ids_u = structural_view(ei, 0.3)  # unseeded path (dropout_edge)
    assert ids_u.numel() < 500


def test_structural_view_keeps_at_least_one_edge():
    ei = torch.tensor([[0], [1]])
    for s in range(20):
        kept, _ = structural_view(ei, 0.9, torch.Generator().manual_seed(s))
        assert kept.shape[1] == 1


def test_feature_view_masks_whole_columns():
    x = torch.ones(50, 40)
    out = feature_view(x, 0.5, torch.Generator().manual_seed(0))
    col_zero = (out == 0).all(0)
    assert 5 < int(col_zero.sum()) < 35
    assert ((out == 0).any(0) == col_zero).all()  # a column is masked entirely or not at all
    assert feature_view(torch.zeros(5, 0), 0.5).shape == (5, 0)


def test_temporal_pairs_match_same_endpoint():
    prev = torch.tensor([7, 3, 9, 12])
    cur = torch.tensor([9, 4, 7, 100])
    ip, ic = temporal_pairs(prev, cur)
    assert torch.equal(prev[ip], cur[ic])
    assert sorted(cur[ic].tolist()) == [7, 9]
    e1, e2 = temporal_pairs(torch.zeros(0, dtype=torch.long), cur)
    assert e1.numel() == e2.numel() == 0
