"""Convolutions over a few pixels computed as matrix products: the same outputs and gradients as
nn.Conv2d, and the same network as far as checkpoints are concerned."""
import copy

import pytest
import torch

from model import build_model
from reid.convolutions import MOST_PIXELS, FewPixelConv2d, few_pixels_as_products


def forward_and_grads(conv, x):
    x = x.clone().requires_grad_(True)
    out = conv(x)
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    grads = [x.grad] + [p.grad for p in conv.parameters()]
    conv.zero_grad()
    return out, grads


# (in, out, kernel, stride, padding, bias, input height x width): ResNet-50's layer3 and layer4 at
# 32 x 16, and a few others
SHAPES = [
    (8, 6, 3, 1, 1, False, (1, 1)),   # 3x3 on one pixel: only the centre tap sees the image
    (8, 6, 1, 2, 0, False, (2, 1)),   # the downsample of layer4
    (8, 6, 3, 2, 1, False, (2, 1)),   # layer4's first 3x3, stride 2
    (8, 6, 3, 1, 1, True, (2, 1)),    # with a bias
    (8, 6, 1, 1, 0, True, (1, 2)),
    (8, 6, (3, 1), 1, (1, 0), False, (2, 1)),
]


@pytest.mark.parametrize("cin, cout, kernel, stride, padding, bias, size", SHAPES)
def test_a_few_pixels_give_the_convolutions_output_and_gradients(cin, cout, kernel, stride, padding, bias, size):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=bias)
    few = copy.deepcopy(conv)
    few.__class__ = FewPixelConv2d
    x = torch.randn(5, cin, *size)
    assert size[0] * size[1] <= MOST_PIXELS
    want, want_grads = forward_and_grads(conv, x)
    got, got_grads = forward_and_grads(few, x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_more_pixels_are_left_to_the_convolution():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    few = copy.deepcopy(conv)
    few.__class__ = FewPixelConv2d
    x = torch.randn(2, 4, 4, 2)
    assert torch.equal(few(x), conv(x))  # the very same call


def test_the_network_keeps_its_weights_and_checkpoint_keys():
    net = build_model({"nclasses": 5, "stride": 2, "use_dense": False})
    before = {k: v.clone() for k, v in net.state_dict().items()}
    few_pixels_as_products(net)
    after = net.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(type(m) is FewPixelConv2d for m in convs)
    net.eval()
    x = torch.randn(2, 3, 32, 16)
    with torch.no_grad():
        got = net(x)
        for m in convs:
            m.__class__ = torch.nn.Conv2d
        want = net(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
