import torch

from random_erasing import RandomErasing


def test_erases_one_rectangle_within_the_area_bounds():
    torch.manual_seed(0)
    for _ in range(20):
        img = torch.ones(3, 64, 32)
        out = RandomErasing(probability=1.0, mean=[0.0, 0.0, 0.0])(img)
        erased = (out == 0).all(0)
        rows, cols = erased.any(1).nonzero(), erased.any(0).nonzero()
        h, w = len(rows), len(cols)
        assert erased.sum() == h * w                       # one filled rectangle
        assert 0.02 * 64 * 32 * 0.5 <= h * w <= 0.4 * 64 * 32 * 1.5  # rounding of h and w


def test_probability_zero_leaves_the_image():
    img = torch.rand(3, 16, 8)
    assert torch.equal(RandomErasing(probability=0.0)(img.clone()), img)
