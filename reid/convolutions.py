"""Convolutions over a few pixels as one matrix product, for training on the CPU.

Small inputs leave ResNet-50's last stages with almost no image: at 32 x 16 (the demo) layer3 sees
2 x 1 pixels and layer4 1 x 1, at 64 x 32 layer4 sees 2 x 1. oneDNN's convolution backward is slow
on such shapes (a 1 x 1 convolution of 1,024 to 2,048 channels on 2 x 1 pixels took 73 ms a step on
an AVX2 CPU, where the same product as a matrix multiplication takes a few), and these layers hold
most of the network's weights. Written as one matrix product, a convolution over at most
MOST_PIXELS input pixels is the same sum, so the same output and gradients up to float rounding,
and autograd's matrix-product backward is fast: a training step at 32 x 16 took 0.54 times as long
on M12 (AVX2), at 64 x 32 0.9 times (bench/speed/step_speed.py --plain measures it). The product's
columns are the input itself for a 1 x 1 kernel and for a single pixel (whose one output only the
kernel's tap at the padding sees), and unfold's (im2col) otherwise: 0.85-0.92 times as long again
at 32 x 16 than unfolding everything.

The module keeps its class's parameters and state_dict: checkpoints, DDP, torch.compile and
export see an ordinary Conv2d. Elsewhere (other devices, larger inputs, grouped convolutions) it
is nn.Conv2d's own forward.
"""
import torch
import torch.nn.functional as F

# Input pixels (height x width) up to which a convolution is a matrix product: the best of 1, 2, 4
# and 8 measured on M12 (docs/benchmarks.md#few-pixel-convolutions).
MOST_PIXELS = 2


class FewPixelConv2d(torch.nn.Conv2d):
    """nn.Conv2d whose forward on the CPU, over at most MOST_PIXELS input pixels, is one matrix
    product."""

    def forward(self, x):
        height, width = x.shape[-2:]
        # a channels-last network (train_new.py --channels_last) stays with oneDNN: as matrix products
        # its steps took 4 times as long
        if (x.device.type != "cpu" or height * width > MOST_PIXELS or x.dim() != 4 or not x.is_contiguous()
                or not self.weight.is_contiguous() or self.groups != 1 or isinstance(self.padding, str)
                or self.padding_mode != "zeros"):
            return super().forward(x)
        out_h, out_w = (
            (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
            for size, pad, dilation, kernel, stride in zip((height, width), self.padding, self.dilation,
                                                           self.kernel_size, self.stride))
        if self.kernel_size == (1, 1) and self.padding == (0, 0):
            # a 1 x 1 kernel reads the pixels its stride lands on: nothing to unfold
            columns = x[:, :, ::self.stride[0], ::self.stride[1]].reshape(len(x), self.in_channels, -1)
            weight = self.weight.reshape(self.out_channels, -1)
        elif height == width == out_h == out_w == 1 and self.dilation == (1, 1):
            # one pixel, one output: only the kernel's tap at (padding) sees it, the others see padding
            columns = x.reshape(len(x), self.in_channels, 1)
            weight = self.weight[:, :, self.padding[0], self.padding[1]]
        else:
            columns = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)
            weight = self.weight.reshape(self.out_channels, -1)
        out = weight @ columns  # batch x out_channels x out_h * out_w
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out.reshape(len(x), self.out_channels, out_h, out_w)


def few_pixels_as_products(net):
    """Every plain nn.Conv2d of `net` becomes a FewPixelConv2d, in place (its class only: the
    weights stay the same tensors). Returns `net`."""
    for module in net.modules():
        if type(module) is torch.nn.Conv2d:
            module.__class__ = FewPixelConv2d
    return net
