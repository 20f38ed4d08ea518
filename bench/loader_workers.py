"""Training steps per second on a CPU by the number of DataLoader worker processes: what sets
--num_workers's default (devices.loader_workers: none on a CPU).

Each configuration trains the real-image recipe's network (ResNet-50 from scratch, P x K batches
of 32 identities x 2 images, the paper's loss, SGD) on images decoded and augmented as
train_new.py does (resize, pad, crop, flip, random erasing), loaded by a DataLoader with N
workers, built afresh as train_new.py builds one per epoch. "network alone" steps on batches
loaded beforehand: the ceiling loading can approach. The configurations take turns for --rounds
rounds, so that a host's slow minute hits all of them; samples/s is the median over the rounds
and "ratio" is against the old default, min(8, cores) workers, measured in the same run.

    python bench/loader_workers.py                     # the demo's synthetic people: about 4 minutes on 2 cores
    python bench/loader_workers.py --data_dir data/real_market_e30/market1501_h100   # real_market.py's tree: 3 min
"""
import os
import statistics
import tempfile
import time

import torch
from torch.utils.data import DataLoader

from model import objective
from reid import cli
from reid.devices import autocast
from reid.training import options
from reid.training.data import training_data
from reid.training.loop import build_training
from reid.training.samplers import pk_batches
from stages import machine, training_tree


def loading_name(workers):
    return f"{workers} worker{'s' * (workers != 1)}"


def train_steps(training, batches, args):
    """Samples per second of training steps over `batches` (an iterable: loading counts)."""
    start, n = time.perf_counter(), 0
    for images, labels in batches:
        images = images.contiguous(memory_format=torch.channels_last)
        with autocast(torch.device("cpu"), args.precision):
            loss_id, loss_verif = objective(*training.net([images, labels]), args.alpha)
        training.optimizer.zero_grad(set_to_none=True)
        (loss_id + loss_verif).backward()
        training.optimizer.step()
        n += len(labels)
    return n / (time.perf_counter() - start)


def main():
    p = cli.parser(__doc__)
    p.add_argument("--data_dir", help="a tree written by prepare.py (not given: the demo's synthetic people)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, min(8, os.cpu_count() or 1)],
                   help="the worker counts to compare")
    p.add_argument("--steps", type=int, default=40, help="training steps per configuration and round")
    p.add_argument("--rounds", type=int, default=3, help="turns each configuration takes")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"],
                   help="the network's arithmetic (the recipe's bf16; fp32 on a CPU without AVX-512 bf16)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="loader_workers_") as work:
        data = training_tree(args.data_dir, work)
        train_args = options.parse_args(
            ["--data_dir", data, "--train_all", "--height", "64", "--width", "32", "--sampler", "pk", "--instances",
             "2", "--batchsize", "64", "--erasing_p", "0.5", "--alpha", "2", "--no-pretrained", "--channels_last",
             "--num_workers", "0", "--precision", args.precision])
        data = training_data(train_args)
        train_set = data.train_set
        torch.manual_seed(0)
        training = build_training(train_args, len(train_set.classes), torch.device("cpu"), pretrained=False)
        training.net.train()
        generator = torch.Generator().manual_seed(0)
        batches = []
        while len(batches) < args.steps:
            batches += pk_batches([label for _, label in train_set.samples], 64, 2, generator)
        batches = batches[:args.steps]
        loaded = list(DataLoader(data.phases["train"], batch_sampler=batches))
        train_steps(training, loaded[:3], train_args)  # the first steps allocate and pick kernels: not timed

        configs = {"network alone": lambda: loaded}
        configs |= {loading_name(n): (lambda n=n: DataLoader(data.phases["train"], batch_sampler=batches,
                                                             num_workers=n))
                    for n in args.workers}
        rates = {name: [] for name in configs}
        for _ in range(args.rounds):
            for name, loader in configs.items():
                rates[name].append(train_steps(training, loader(), train_args))
    print(f"{machine()} | torch {torch.__version__}, {torch.get_num_threads()} threads | 64 x 32, batch 64, "
          f"{args.precision}, {args.steps} steps x {args.rounds} rounds, {len(train_set)} images")
    old = loading_name(min(8, os.cpu_count() or 1))
    print(f"{'loading':>16} {'samples/s':>10} {'ratio':>6}   rounds")
    for name, found in rates.items():
        ratio = f"{statistics.median(found) / statistics.median(rates[old]):.2f}x" if old in rates else "-"
        print(f"{name:>16} {statistics.median(found):10.1f} {ratio:>6}   " + ", ".join(f"{r:.1f}" for r in found))


if __name__ == "__main__":
    main()
