"""Which layer of the network reduced precision gets wrong on this machine: run on a CPU where
bf16 misbehaves (issue 40: Intel CPUs with AMX gave NaN losses and descriptors that changed from
call to call) to find the op, and on a sound one for the figures to compare with.

    python bench/experiments/bf16_ops.py                       # the recipe's shapes: batch 64 at 64 x 32, channels-last
    python bench/experiments/bf16_ops.py --height 256 --width 128 --batch 16

The recipe's network (ResNet-50 from scratch, 651 identities) runs once in fp32 on random images,
each layer's input recorded. Then every layer with weights (convolutions, Linear, BatchNorm) runs
alone on its recorded input, forward and backward, in fp32 and twice under autocast (BatchNorm
in training mode unless --mode eval); each row
gives the error of its output, its input's gradient and its weights' gradient against fp32
(relative, as a norm), and whether the two autocast calls differed. On a sound CPU the errors are
about bf16's 8-bit mantissa (a few 1e-3) and the calls are alike; a layer with NaN, a much larger
error, or calls that differ is the one to run in fp32. The end-to-end check that the scripts make
(devices.Arithmetic.check) closes the output.
"""
import re

import torch
from torch.utils.data import TensorDataset

from bench.stages import machine
from model import check_precision, ft_net
from reid import cli
from reid.devices import PRECISIONS, Arithmetic, autocast

WEIGHTED = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)


def relative(a, b):
    """||a - b|| / ||b||, NaN where a has any."""
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def run_layer(layer, x, g, precision, device):
    """(output, input gradient, weight gradient) of one layer on input x, backward from g."""
    x = x.detach().clone()
    if precision != "fp32" and isinstance(layer, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
        # autocast leaves BatchNorm's type to its input: in the network it is a convolution's, reduced
        x = x.to(PRECISIONS[precision])
    x.requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    with autocast(device, precision):
        out = layer(x)
    (out.float() * g).sum().backward()
    return out.detach().float(), x.grad.detach().float(), layer.weight.grad.detach().float()


def main():
    p = cli.parser(__doc__)
    p.add_argument("--height", type=int, default=64, help="input height (the CPU recipe's 64)")
    p.add_argument("--width", type=int, default=32, help="input width (the CPU recipe's 32)")
    p.add_argument("--batch", type=int, default=64, help="images per batch (the recipe's 64)")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16"], help="the reduced precision to check")
    p.add_argument("--mode", default="train", choices=["train", "eval"],
                   help="BatchNorm's mode for the layers run alone: train (batch statistics, as in a training step) "
                        "or eval (running statistics, as in test.py)")
    args = p.parse_args()
    device = torch.device("cpu")
    onednn = re.search(r"MKL-DNN (v[\d.]+)", torch.__config__.show())
    print(machine(), f"| torch {torch.__version__}, oneDNN {onednn[1] if onednn else 'unknown'}, "
          f"{torch.get_num_threads()} threads", flush=True)
    torch.manual_seed(0)
    net = ft_net(651, pretrained=False).to(memory_format=torch.channels_last).eval()
    images = torch.randn(args.batch, 3, args.height, args.width).contiguous(memory_format=torch.channels_last)
    inputs = {}
    def record(name):
        def hook(module, given, output):
            inputs[name] = given[0].detach()
        return hook
    hooks = [m.register_forward_hook(record(name)) for name, m in net.named_modules() if isinstance(m, WEIGHTED)]
    with torch.no_grad():
        net(images)
    for h in hooks:
        h.remove()
    print(f"{'layer':<32} {'input':>20} {'output':>9} {'grad in':>9} {'grad w':>9}  calls")
    layers = dict(net.named_modules())
    net.train(args.mode == "train")
    for name, x in inputs.items():
        layer = layers[name]
        g = torch.randn_like(layer(x).float())
        reference = run_layer(layer, x, g, "fp32", device)
        first = run_layer(layer, x, g, args.precision, device)
        second = run_layer(layer, x, g, args.precision, device)
        errors = " ".join(f"{relative(a, b):>9.2e}" for a, b in zip(first, reference))
        alike = all(torch.equal(a, b) for a, b in zip(first, second))
        print(f"{name:<32} {'x'.join(map(str, x.shape)):>20} {errors}  {'alike' if alike else 'DIFFER'}", flush=True)
    # in eval mode, as test.py
    check_precision(Arithmetic(device, args.precision), net, TensorDataset(images), "random images")


if __name__ == "__main__":
    main()
