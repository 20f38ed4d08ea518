"""Training steps per second of the network alone, by input size and arithmetic: what chooses a
CPU recipe's input size and --precision before any hour of training is spent.

Each configuration builds the training network as train_new.py does (build_training: ResNet-50
from scratch, the verification head, SGD) and times full steps on random images of a P x K batch
(--sampler pk: one forward pass, pairs from the batch, the paper's loss, backward, update). No
image is decoded: a real epoch adds loading, on the same cores.

    python bench/speed/step_speed.py                                   # 64x32, 96x48, 128x64: 3 min on 2 cores
    python bench/speed/step_speed.py --sizes 256x128 --steps 4         # the paper's size
    python bench/speed/step_speed.py --sizes 64x32 --compile           # and the fastest of them under torch.compile
    python bench/speed/step_speed.py --sizes 64x32 --stride1           # and the fastest with train_new.py --stride 1
    python bench/speed/step_speed.py --sizes 32x16 64x32 --plain       # and fp32 without reid/convolutions.py

samples/s is the median over the timed steps; "ratio" is against fp32 channels-first at the same
size, measured in the same run; "min/epoch" is --images divided by samples/s. bf16 is timed
everywhere, but is a candidate for the fastest only where it is right here: the first line after
the machine's says whether it is (stages.training_precision: native bf16 instructions, and
descriptors that agree with fp32's). With --compile, the fastest candidate is timed again as
train_new.py --compile runs it (bf16 channels-last on a CPU with AVX-512 bf16, fp32 on one with
AVX2 only); its compilation happens in the untimed first steps, and is printed apart. With
--stride1, the fastest candidate is timed again with ResNet-50's last block at stride 1
(train_new.py --stride 1). With --plain, fp32 channels-first is timed again with every
convolution left to oneDNN, as before reid/convolutions.py computed those over a pixel or two as
matrix products: its ratio says how much slower that was.
"""
import statistics
import time

import torch
from torch.utils.data import TensorDataset

from bench.stages import machine, training_precision
from model import objective
from reid import cli
from reid.convolutions import FewPixelConv2d
from reid.devices import CHECK_IMAGES, autocast
from reid.training import options
from reid.training.loop import build_training

CONFIGS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]


def samples_per_s(height, width, precision, channels_last, batch, steps, compiled=False, stride=2, classes=651,
                  plain=False):
    """Median samples/s over the timed steps, and the seconds of the untimed first two (compilation, if
    any). plain: every convolution left to oneDNN."""
    args = options.parse_args(["--no-pretrained", "--sampler", "pk", "--batchsize", str(batch), "--precision",
                                 precision, "--channels_last" if channels_last else "--no-channels_last",
                                 "--stride", str(stride)])
    torch.manual_seed(0)
    training = build_training(args, classes, torch.device("cpu"), pretrained=False)
    net = training.net.train()
    for module in net.modules() if plain else ():
        if type(module) is FewPixelConv2d:
            module.__class__ = torch.nn.Conv2d
    net = torch.compile(net) if compiled else net
    images = torch.randn(batch, 3, height, width)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.arange(batch // 2).repeat_interleave(2)  # P identities x K = 2 images
    times = []
    for _ in range(steps + 2):  # the first two steps allocate and pick kernels: not timed
        start = time.perf_counter()
        with autocast(torch.device("cpu"), precision):
            loss_id, loss_verif = objective(*net([images, labels]), args.alpha)
        training.optimizer.zero_grad(set_to_none=True)
        (loss_id + loss_verif).backward()
        training.optimizer.step()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times[2:]), sum(times[:2])


def main():
    p = cli.parser(__doc__)
    p.add_argument("--sizes", nargs="+", default=["64x32", "96x48", "128x64"],
                   help="input sizes HEIGHTxWIDTH to time")
    p.add_argument("--batch", type=int, default=64, help="images per step (the real-image recipe's 64)")
    p.add_argument("--steps", type=int, default=6, help="timed steps per configuration (after 2 untimed)")
    p.add_argument("--compile", action="store_true",
                   help="also time the fastest configuration under torch.compile (train_new.py --compile)")
    p.add_argument("--stride1", action="store_true",
                   help="also time the fastest configuration with ResNet-50's last block at stride 1 "
                        "(train_new.py --stride 1)")
    p.add_argument("--plain", action="store_true",
                   help="also time fp32 channels-first with every convolution left to oneDNN (no matrix products "
                        "for convolutions over a pixel or two)")
    p.add_argument("--images", type=int, default=11241,
                   help="images per epoch, for min/epoch (default: Market-1501's 651 training identities)")
    args = p.parse_args()
    sizes = []
    for size in args.sizes:
        height, _, width = size.partition("x")
        if not (height.isdigit() and width.isdigit()):
            p.error(f"--sizes {size}: give HEIGHTxWIDTH, e.g. 64x32")
        sizes.append((int(height), int(width)))
    print(machine(), f"| torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    torch.manual_seed(0)
    trusted = training_precision(TensorDataset(torch.randn(CHECK_IMAGES, 3, *sizes[0])))
    print(f"{'size':>8} {'precision':>9} {'memory':>24} {'samples/s':>10} {'ratio':>6} {'min/epoch':>9}")
    for height, width in sizes:
        rates = {}
        for precision, channels_last in CONFIGS:
            rates[precision, channels_last] = report(height, width, precision, channels_last, False, args,
                                                     rates.get(("fp32", False)))
        candidates = {k: rate for k, rate in rates.items() if k[0] in ("fp32", trusted)}
        if args.compile:
            report(height, width, *max(candidates, key=candidates.get), True, args, rates[("fp32", False)])
        if args.stride1:
            report(height, width, *max(candidates, key=candidates.get), False, args, rates[("fp32", False)], stride=1)
        if args.plain:
            report(height, width, "fp32", False, False, args, rates[("fp32", False)], plain=True)


def report(height, width, precision, channels_last, compiled, args, base, stride=2, plain=False):
    """Time one configuration and print its row; its samples/s, against `base` (fp32 channels-first)."""
    rate, first = samples_per_s(height, width, precision, channels_last, args.batch, args.steps, compiled, stride,
                                plain=plain)
    memory = (("channels-last" if channels_last else "channels-first") + (", compiled" if compiled else "")
              + (", stride 1" if stride == 1 else "") + (", oneDNN only" if plain else ""))
    print(f"{height:>4}x{width:<3} {precision:>9} {memory:>24} {rate:>10.1f} {rate / (base or rate):>5.2f}x "
          f"{args.images / rate / 60:>9.1f}" + (f"  ({first:.0f} s compiling)" if compiled else ""), flush=True)
    return rate


if __name__ == "__main__":
    main()
