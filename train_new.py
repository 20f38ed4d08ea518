"""Stage 2: train the identification + verification network on a prepared tree and
write the run folder model/<name>/ (layout in runs.py). The method is model.py's:
    loss = CE(identity of anchor)                                              (loss_id)
         + alpha * 0.5 * (CE(verif(f * f_pos), same) + CE(verif(f * f_neg), different))   (loss_verif)
with f the L2-normalised 512-d descriptors of an anchor, a positive (another image of the same
person) and a negative (an image of another person); both parts are logged each epoch.

--sampler triplet (the original's, default): each anchor brings a positive and a negative
image, three forward passes. --sampler pk: each batch holds P identities x K images, one
forward pass, and each anchor's positive and negative are other images of the same batch.
Under torchrun the batches are split across processes (DistributedDataParallel);
--batchsize stays the total over all of them.

--init_from RUN starts from a trained run's net_last.pth and verif_last.pth instead of ImageNet
(fine-tuning on other people, another dataset): the backbone, the bottleneck and the verification
head keep their weights, the identity classifier is made anew for this tree's identities. The
run's --use_dense, --stride, --height and --width are taken over where not given (they describe
its network and the images it learned from), and must match where given. opts.yaml records the run
it started from; a --resume of this run continues it without --init_from.
"""
import os
import random
import sys

import numpy as np
import torch

from model import check_precision
from reid import cli
from reid.cli import UserError
from reid.data import LabelledImages, test_transform
from reid.devices import Arithmetic, check_in_sync, loader_workers, note_emulated, start_processes
from reid.evaluation.verification import calibration_images
from reid.runs import check_run_folder, checkpoint_path, restore_state, run_dir, run_files, save_opts, save_weights
from reid.training.data import training_data
from reid.training.loop import Progress, build_training, calibrate_thresholds, check_batches, train_epochs
from reid.training.options import parse_args
from reid.training.start import init_weights, start_from


def main(argv=None):
    args = parse_args(argv, __doc__)
    shard, device = start_processes(args.gpu_ids)
    args.num_workers = loader_workers(args.num_workers, device)
    note_emulated(device, args.precision)
    check_batches(args, shard)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    folder = run_dir(args.name)
    source = start_from(args, folder)
    if args.use_dense and args.stride == 1:
        raise UserError("--stride 1 changes ResNet-50's last block; DenseNet-121 (--use_dense) has none such: drop one")
    state = check_run_folder(folder, args, defaults=vars(parse_args([])))

    data = training_data(args)
    opts = dict(vars(args), nclasses=len(data.train_set.classes))
    if not args.pretrained and not args.init_from and shard.main:
        print("note: --no-pretrained: the backbone starts from random weights, not ImageNet", file=sys.stderr)
    if not args.train_all and shard.main:
        print("note: training on train/, holding out val; the original's train.py trained on train_all whatever "
              "--train_all said: pass --train_all to train on its training set", file=sys.stderr)

    training = build_training(args, opts["nclasses"], device,
                              pretrained=args.pretrained and state is None and source is None)
    if source is not None:  # never with --resume
        loaded = init_weights(training.net, *source, opts["nclasses"])
        if shard.main:
            print(loaded)
    if args.ema_decay:
        training.start_average(args.ema_decay)
    progress = Progress()
    if state is None:
        if shard.main:
            for path in run_files(folder):  # --overwrite: the old run goes only now that the new one can start
                os.remove(path)
            save_opts(folder, opts)
    else:
        progress = Progress(*restore_state(state, training.parts(), device))
        if shard.main:
            save_opts(folder, dict(opts, epochs=args.epochs))
            print(f"{folder} has finished its {args.epochs} epochs; nothing left to train (raise --epochs to train on)"
                  if progress.epoch == args.epochs else f"resuming {folder} at epoch {progress.epoch + 1}"
                  + (f", step {progress.sums['steps'] + 1}" if progress.sums else ""))

    arithmetic = Arithmetic(device, args.precision)
    some = LabelledImages(data.train_set.samples, test_transform(args.height, args.width), data.train_set.loader)
    check_precision(arithmetic, training.net.model, some, "training images", shard)
    if shard.main:
        print(f"training {args.name}: {len(data.train_set)} images of {opts['nclasses']} ids on {device}"
              f"{f' x {shard.world} processes' if shard.world > 1 else ''}, {args.epochs} epochs")
    train_epochs(training, data, args, progress, arithmetic=arithmetic, device=device, shard=shard, folder=folder)

    if shard.main:
        kept = training.kept
        save_weights(folder, "last", kept.model, kept.verif)
        print(f"saved {checkpoint_path(folder, 'last')}")
        calibration = calibration_images(args.data_dir, args.height, args.width, args.batchsize, args.num_workers)
        if calibration is not None or data.retrieval is not None:
            calibrate_thresholds(folder, kept, data.retrieval, calibration, device, args, arithmetic.precision)
    if shard.world > 1:
        check_in_sync(training.net, shard)
        shard.finish()


if __name__ == "__main__":
    cli.run_main(main)
