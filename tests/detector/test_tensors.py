"""detector.tensors.cat_rows: a view when the parts lie back to back, else torch.cat."""
import torch

from detector.tensors import cat_rows


def test_back_to_back_slices_give_a_view_of_the_rows():
    a = torch.arange(40.0).view(10, 4)
    got = cat_rows(torch.split(a, [3, 0, 4, 3]))
    assert torch.equal(got, a) and got.data_ptr() == a.data_ptr()
    mid = cat_rows([a[2:4], a[4:7]])
    assert torch.equal(mid, a[2:7]) and mid.data_ptr() == a[2:].data_ptr()
    flat = torch.arange(10)
    assert torch.equal(cat_rows(torch.split(flat, [4, 6])), flat)


def test_anything_else_is_copied_like_cat():
    a = torch.arange(40.0).view(10, 4)
    for parts in ([a[0:3], a[5:7]], [a[5:7], a[0:3]], [a[0:2], torch.ones(2, 4)], [a[:, :2], a[:, 2:]]):
        got = cat_rows(parts)
        assert torch.equal(got, torch.cat(parts))
        assert got.data_ptr() != a.data_ptr() or parts[0].data_ptr() != a.data_ptr()
    assert torch.equal(cat_rows([a[:3]]), a[:3])
