"""Training speed of the original's triplet loading against --sampler pk, at the same
batch size in the same run, and the accuracy each reaches after the same epochs.

    triplet  (default, the original's) each anchor loads a positive and a negative image:
             three images decoded and three forward/backward passes per anchor
    pk       P identities x K images per batch, one pass; each anchor's positive and
             negative are other images of the batch

A sample is one training anchor: one identity-loss term and two verification pairs in
both modes. Each sampler trains the demo's configuration (demo.sh) on the demo's synthetic
data from scratch in a temporary folder; test.py and evaluate.py then give Rank@1 and mAP.
samples/s is read from train.log (loading included), the median over the epochs.

    python bench/train_speed.py                     # the demo's sizes: about 12 minutes on 2 cores
    python bench/train_speed.py --height 256 --width 128 -- --lr 0.02 --no-pretrained --precision bf16   # a GPU
"""
import argparse
import os
import re
import statistics
import tempfile

import torch

from reid import cli
from stages import RESULT_LINE, run_stage, training_tree

RATE = re.compile(r"\| train .* ([\d.]+) samples/s")


def main():
    p = cli.parser(__doc__)
    p.add_argument("--epochs", type=int, default=8, help="epochs each sampler trains (the demo's 8)")
    p.add_argument("--decay_epoch", type=int, default=6, help="lr x 0.1 after this epoch (the demo's 6)")
    p.add_argument("--batchsize", type=int, default=32, help="anchors per batch, the same for both samplers")
    p.add_argument("--instances", type=int, default=2,
                   help="K, images per identity in a pk batch (train_new.py's default)")
    p.add_argument("--height", type=int, default=64, help="training and test image height (the demo's 64)")
    p.add_argument("--width", type=int, default=32, help="training and test image width (the demo's 32)")
    p.add_argument("--data_dir", help="a prepared tree to train on instead of the demo's synthetic data")
    p.add_argument("train_args", nargs=argparse.REMAINDER,
                   help="after --: further train_new.py flags for both samplers (default: the demo's "
                        "--lr 0.02 --no-pretrained --no-channels_last)")
    args = p.parse_args()
    extra = [a for a in args.train_args if a != "--"] or ["--lr", "0.02", "--no-pretrained", "--no-channels_last"]

    with tempfile.TemporaryDirectory(prefix="train_speed_") as work:
        data = training_tree(args.data_dir, work)
        where = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{os.cpu_count()} CPU cores"
        print(f"{args.epochs} epochs, batch {args.batchsize}, {args.height} x {args.width}, {where}; "
              f"train_new.py flags {' '.join(extra)}")
        found = {}
        for sampler in ("triplet", "pk"):
            name = f"bench_{sampler}"
            run_stage("train_new.py", "--name", name, "--data_dir", data, "--sampler", sampler,
                      "--instances", str(args.instances), "--epochs", str(args.epochs), "--decay_epoch",
                      str(args.decay_epoch), "--batchsize", str(args.batchsize), "--height", str(args.height),
                      "--width", str(args.width), *extra, cwd=work)
            with open(os.path.join(work, "model", name, "train.log")) as log:
                rates = [float(m.group(1)) for m in RATE.finditer(log.read())]
            result = os.path.join("model", name, "pytorch_result.mat")
            run_stage("test.py", "--name", name, "--test_dir", data, "--output", result, cwd=work)
            _, rank1, _, _, mean_ap = RESULT_LINE.search(run_stage("evaluate.py", "--result", result,
                                                                   cwd=work)).groups()
            rank1, mean_ap = float(rank1), float(mean_ap)
            found[sampler] = statistics.median(rates), rank1, mean_ap
            print(f"  {sampler:8s} {found[sampler][0]:7.1f} samples/s (median of {len(rates)} epochs)   "
                  f"Rank@1 {rank1:.4f}  mAP {mean_ap:.4f}", flush=True)
    (base, base_r1, base_map), (pk, pk_r1, pk_map) = found["triplet"], found["pk"]
    print(f"pk / triplet: {pk / base:.2f}x samples/s; Rank@1 {100 * (pk_r1 - base_r1):+.1f} points, "
          f"mAP {100 * (pk_map - base_map):+.1f} points")


if __name__ == "__main__":
    main()
