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
import argparse
import math
import os
import random
import sys
import time

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from torchvision import transforms
from tqdm import tqdm

from reid import cli
from reid.data import IMAGENET_MEAN, IMAGENET_STD, LabelledImages, image_folder, parse_names, test_transform
from reid.devices import Arithmetic, check_in_sync, loader_workers, note_emulated, start_processes
from reid.evaluation.metrics import rank_queries, summarize
from model import (DIFFERENT, IDENTITY_CLASSIFIER, SAME, Verification, VerificationTriplets, build_model,
                   check_precision, descriptors, first_images, head_weights, load_trained, load_verif, objective, verif_net)
from random_erasing import RandomErasing
from reid.runs import (MODEL_ROOT, StopRequest, agree_to_stop, check_run_folder, checkpoint_path, draw_curves, load_opts,
                  restore_state, run_dir, run_files, save_opts, save_state, save_weights)
from reid.evaluation.verification import calibrate, calibrate_on_people, calibration_images, save_thresholds


def parse_args(argv=None):
    p = cli.parser(__doc__)
    cli.add_run_flags(p, "to write", which_epoch=False)
    cli.add_device_flags(p, "train")
    p.add_argument("--data_dir", default="../Market/pytorch", help="the pytorch/ folder written by prepare.py")
    p.add_argument("--train_all", action="store_true",
                   help="train on train_all (train + val), as the original did with or without this flag; no validation")
    p.add_argument("--batchsize", default=32, type=int, help="anchors per batch (each brings a positive and a negative)")
    p.add_argument("--lr", default=0.1, type=float, help="learning rate of the new layers; a pretrained backbone gets 0.1 x lr")
    p.add_argument("--alpha", default=1.0, type=float, help="weight of the verification loss")
    p.add_argument("--label_smoothing", default=0.0, type=float,
                   help="share of the identity loss's target spread evenly over all identities (0: the paper's "
                        "plain cross-entropy; 0.1 is common in later re-ID work)")
    p.add_argument("--erasing_p", default=0, type=float, help="random erasing probability (0 disables it)")
    p.add_argument("--color_jitter", action="store_true", help="jitter brightness, contrast and saturation by 0.1")
    p.add_argument("--use_dense", action="store_true", default=None,
                   help="DenseNet-121 backbone instead of ResNet-50 (not given: ResNet-50, or the --init_from run's)")
    p.add_argument("--stride", default=None, type=int, choices=[1, 2],
                   help="ResNet-50's stride in its last block: 2 as ImageNet's (and the paper's), 1 keeps twice the "
                        "resolution in its last feature map, at more arithmetic (not given: 2, or the --init_from "
                        "run's)")
    p.add_argument("--epochs", default=60, type=int, help="number of epochs")
    p.add_argument("--decay_epoch", default=40, type=int,
                   help="--lr_schedule step: epoch after which every learning rate is multiplied by 0.1")
    p.add_argument("--lr_schedule", default="step", choices=["step", "cosine"],
                   help="step: every learning rate x0.1 after --decay_epoch (the original's); cosine: each falls "
                        "along half a cosine from its value at the first epoch towards 0 after the last (a --resume "
                        "with more --epochs stretches the rest of the curve)")
    p.add_argument("--warm_epoch", default=0, type=int,
                   help="epochs over which every learning rate rises step by step from 0.1 x its scheduled value "
                        "to it (0: none, as the paper; at most --decay_epoch, or --epochs with --lr_schedule cosine)")
    p.add_argument("--ema_decay", default=0.0, type=float,
                   help="keep an exponential moving average of the weights and BatchNorm statistics, each step "
                        "average = decay x average + (1 - decay) x weights, and validate and save it instead of the "
                        "last weights (0: none, as the paper; 0.999 averages over about the last 1000 steps)")
    p.add_argument("--seed", default=0, type=int, help="seed of every random number generator (weights, sampling, augmentation)")
    p.add_argument("--height", default=None, type=int,
                   help="input image height (not given: 256, or the --init_from run's)")
    p.add_argument("--width", default=None, type=int,
                   help="input image width (not given: 128, or the --init_from run's)")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="start from ImageNet weights (torchvision); --no-pretrained trains from scratch")
    p.add_argument("--sampler", default="triplet", choices=["triplet", "pk"],
                   help="triplet: a positive and a negative loaded per anchor (the original); "
                        "pk: P identities x K images per batch, pairs formed inside it (one forward pass)")
    p.add_argument("--instances", default=2, type=int,
                   help="--sampler pk: images per identity in a batch (K); 2 gives each anchor one positive "
                        "and the batch the most identities")
    p.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels-last memory format (faster convolutions on GPUs and at 256 x 128 on CPUs)")
    p.add_argument("--compile", action="store_true", help="compile the network with torch.compile (slow first steps)")
    p.add_argument("--init_from", default=None, metavar="RUN",
                   help="start from this trained run (model/<name>, or its name) instead of ImageNet: its backbone, "
                        "bottleneck and verification head, a new identity classifier; its backbone then learns at "
                        "0.1 x lr, as a pretrained one (not given: ImageNet weights, or none with --no-pretrained)")
    p.add_argument("--resume", action="store_true",
                   help="continue model/<name>/ from its state.pth (same options; --epochs may grow)")
    p.add_argument("--overwrite", action="store_true", help="delete the run already in model/<name>/ and start again")
    p.add_argument("--val_every", default=1, type=int, help="validate every this many epochs, and after the last")
    p.add_argument("--state_every", default=1, type=int,
                   help="write the full training state (state.pth) every this many epochs; also on Ctrl-C and SIGTERM")
    return p.parse_args(argv)


def triplet_batches(n, batchsize, generator):
    """The original's batches: a shuffled order of all anchors, cut into full batches."""
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i:i + batchsize] for i in range(0, n - batchsize + 1, batchsize)]


def pk_batches(labels, batchsize, instances, generator):
    """Batches of batchsize // instances identities x `instances` images. Each identity's images
    are shuffled and dealt out in groups of K (drawn again when it has fewer than K); the groups
    are shuffled and packed, no identity twice in a batch."""
    by_label = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    groups = []
    for label in sorted(by_label):
        images = by_label[label]
        order = [images[j] for j in torch.randperm(len(images), generator=generator).tolist()]
        if len(order) < instances:
            order += [images[j] for j in torch.randint(len(images), (instances - len(order),), generator=generator).tolist()]
        groups += [(label, order[i:i + instances]) for i in range(0, len(order) - instances + 1, instances)]
    groups = [groups[j] for j in torch.randperm(len(groups), generator=generator).tolist()]
    per_batch, batches, current, seen = batchsize // instances, [], [], set()
    for label, group in groups:
        if label in seen:
            continue  # dropped: a batch holds each identity once, and the next epoch reshuffles
        current.append(group)
        seen.add(label)
        if len(current) == per_batch:
            batches.append([i for g in current for i in g])
            current, seen = [], set()
    return batches


def retrieval_split(val_samples, train_samples, per_id=4):
    """Val images as queries; as gallery, up to `per_id` training images of each val id from
    cameras other than its val image's, so that every query has good matches to find."""
    val_cams = dict(zip((label for _, label in val_samples), parse_names([p for p, _ in val_samples])[1]))
    train_cams = parse_names([p for p, _ in train_samples])[1]
    taken, gallery = {}, []
    for (path, label), cam in zip(train_samples, train_cams):
        if label in val_cams and cam != val_cams[label] and taken.get(label, 0) < per_id:
            taken[label] = taken.get(label, 0) + 1
            gallery.append((path, label))
    return val_samples, gallery


def train_transform(args):
    pad = max(1, round(10 * args.height / 256))  # the original pads 10 pixels at 256 x 128
    steps = [
        transforms.Resize((args.height, args.width), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.Pad(pad),
        transforms.RandomCrop((args.height, args.width)),
        transforms.RandomHorizontalFlip(),
    ]
    if args.color_jitter:
        steps.append(transforms.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0))
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if args.erasing_p > 0:
        steps.append(RandomErasing(probability=args.erasing_p, mean=[0.0, 0.0, 0.0]))
    return transforms.Compose(steps)


def training_data(args):
    """The training images; the triplet dataset of each phase (anchors from train or train_all;
    val anchors are checked against the training pool); the loaders of val queries against
    training images (validation each epoch, then the calibration of thresholds), None without val/."""
    train_set = image_folder(args.data_dir, "train_all" if args.train_all else "train", "--data_dir")
    if len(train_set.classes) < 2:
        sys.exit(f"error: {train_set.root} holds {len(train_set.classes)} identity; training needs at least two")
    if len(train_set) < args.batchsize:
        sys.exit(f"error: {train_set.root} holds {len(train_set)} images, fewer than --batchsize {args.batchsize}; lower --batchsize")
    if args.sampler == "pk":
        identities = args.batchsize // args.instances
        if len(train_set.classes) < identities:
            # a batch holds each identity once: with fewer, no batch fills and every epoch would train nothing
            sys.exit(f"error: {train_set.root} holds {len(train_set.classes)} identities, fewer than the {identities} "
                     f"of a --sampler pk batch (--batchsize {args.batchsize} / --instances {args.instances}); lower "
                     f"--batchsize or raise --instances")
        phases = {"train": LabelledImages(train_set.samples, train_transform(args), train_set.loader)}
    else:
        phases = {"train": VerificationTriplets(train_set.samples, train_set.samples, train_transform(args), train_set.loader)}
    retrieval = None
    if not args.train_all or os.path.isdir(os.path.join(args.data_dir, "val")):
        val_set = image_folder(args.data_dir, "val", "--data_dir")
        unknown = sorted(set(val_set.classes) - set(train_set.classes))
        if unknown:
            sys.exit(f"error: ids {', '.join(unknown[:5])} are in val but not in train; rerun prepare.py")
        val_samples = [(p, train_set.class_to_idx[val_set.classes[t]]) for p, t in val_set.samples]
        if not args.train_all:  # with --train_all the val images are trained on: no validation
            phases["val"] = VerificationTriplets(val_samples, train_set.samples, test_transform(args.height, args.width),
                                                 train_set.loader)
        # retrieval on val as test.py + evaluate.py do it
        query, gallery = retrieval_split(val_samples, train_set.samples)
        retrieval = {name: (DataLoader(LabelledImages(samples, test_transform(args.height, args.width), train_set.loader),
                                       batch_size=args.batchsize, num_workers=args.num_workers),
                            *parse_names([path for path, _ in samples]))
                     for name, samples in (("query", query), ("gallery", gallery))}
    return train_set, phases, retrieval


def epoch_loader(dataset, args, epoch, device, train, skip=0, shard=None):
    """The loader of one epoch. Its batches and its workers' random numbers depend on the seed and
    the epoch alone, so an epoch replays the same after a resume; `skip` drops batches already
    done. Under torchrun each process loads its slice of every batch."""
    generator = torch.Generator().manual_seed(args.seed * 1_000_003 + epoch)
    if not train:
        return DataLoader(dataset, batch_size=args.batchsize, num_workers=args.num_workers,
                          pin_memory=device.type == "cuda", generator=generator)
    if args.sampler == "pk":
        batches = pk_batches([label for _, label in dataset.samples], args.batchsize, args.instances, generator)
    else:
        batches = triplet_batches(len(dataset), args.batchsize, generator)
    return DataLoader(dataset, batch_sampler=[shard.take(b) for b in batches[skip:]], num_workers=args.num_workers,
                      pin_memory=device.type == "cuda", generator=generator)


def check_batches(args, shard):
    if args.val_every < 1 or args.state_every < 1:
        sys.exit("error: --val_every and --state_every count epochs: give 1 or more")
    if not 0 <= args.ema_decay < 1:
        sys.exit(f"error: --ema_decay {args.ema_decay}: give 0 (no average) or a decay below 1, such as 0.999")
    # the warm-up ends before the rate first falls: at --decay_epoch, or with the cosine at --epochs
    warm_limit = "epochs" if args.lr_schedule == "cosine" else "decay_epoch"
    if not 0 <= args.warm_epoch <= getattr(args, warm_limit):
        sys.exit(f"error: --warm_epoch {args.warm_epoch}: give 0 (no warm-up) up to --{warm_limit} "
                 f"{getattr(args, warm_limit)}")
    if args.batchsize % shard.world:
        sys.exit(f"error: --batchsize {args.batchsize} is the total over {shard.world} processes; make it a multiple of it")
    if args.sampler == "pk" and (args.instances < 2 or (args.batchsize // args.instances) % shard.world
                                 or args.batchsize % args.instances):
        sys.exit(f"error: --sampler pk needs --instances of 2 or more dividing --batchsize {args.batchsize} into "
                 f"identities that split evenly over {shard.world} process(es)")


# The options that shape the network and the images it learns from, and their defaults: an
# --init_from run's are taken over where not given
ARCHITECTURE = {"use_dense": False, "stride": 2, "height": 256, "width": 128}


def find_run(given):
    """The folder of the run --init_from names: a run folder as given (model/<name>), else model/<given>."""
    for folder in (given, run_dir(given)):
        if os.path.isfile(os.path.join(folder, "opts.yaml")):
            return folder
    sys.exit(f"error: --init_from {given}: neither {os.path.join(given, 'opts.yaml')} nor "
             f"{os.path.join(run_dir(given), 'opts.yaml')} exists; give a run folder (model/<name>) or the name of a "
             f"run under {MODEL_ROOT}/ of the current folder")


def start_from(args, folder):
    """(folder, options, flags taken over) of the run --init_from names, or None; fills --use_dense,
    --stride, --height and --width where not given: from that run, or (--resume) from a run that was started
    from one, else the defaults. Exits with one line where a given one contradicts the run's."""
    if args.init_from and args.resume:
        sys.exit(f"error: --init_from starts a new run from another run's weights and --resume continues {folder} "
                 f"from its own state; drop --init_from to resume (the run remembers where it started from), or "
                 f"--resume to start anew")
    source, taken = None, {}
    if args.init_from:
        source = find_run(args.init_from)
        taken = load_opts(source)
        if not os.path.isfile(checkpoint_path(source, "last")):
            sys.exit(f"error: --init_from {source} has no net_last.pth (its training has not finished): finish it "
                     f"(train_new.py --name {os.path.basename(source)} --resume) or start from another run")
        if taken.get("original") and taken.get("use_dense"):
            sys.exit(f"error: --init_from {source} is a DenseNet-121 run of the original code, which pools its last "
                     f"feature map without the ReLU this repository's DenseNet applies, so its features would not "
                     f"carry over; start from a ResNet-50 run or from ImageNet")
        # --use_dense is given only as True: it contradicts a ResNet-50 run
        conflicts = ["--use_dense (the run is ResNet-50)" if k == "use_dense" else
                     f"--{k} {getattr(args, k)} (the run's: {taken.get(k)})"
                     for k, default in ARCHITECTURE.items()
                     if getattr(args, k) is not None and getattr(args, k) != taken.get(k, default)]
        if conflicts:
            sys.exit(f"error: --init_from {source} keeps that run's network and input size, which "
                     f"{', '.join(conflicts)} contradict; drop them (the run's are taken over) or start from "
                     f"another run")
        args.init_from = source
    elif args.resume and os.path.isfile(os.path.join(folder, "opts.yaml")):
        saved = load_opts(folder)
        if saved.get("init_from"):  # what it took over was not given on its command line either
            args.init_from, taken = saved["init_from"], saved
    given = {k for k in ARCHITECTURE if getattr(args, k) is not None}
    for k, default in ARCHITECTURE.items():
        if k not in given:
            setattr(args, k, taken.get(k, default))
    return None if source is None else (source, taken, sorted(set(ARCHITECTURE) - given))


def init_weights(parts, source, opts, taken_over, nclasses):
    """Load the --init_from run's network, but its identity classifier, and its verification head into
    `parts`; the line that says what was loaded."""
    # the original code's runs keep their number of classes in the checkpoint: load_trained reads it
    trained, trained_opts = load_trained(source)  # exits with one line where the checkpoint does not fit
    state = parts["model"].state_dict()
    state.update({k: v for k, v in trained.state_dict().items() if not k.startswith(IDENTITY_CLASSIFIER)})
    parts["model"].load_state_dict(state)
    verif = load_verif(source, fix=f"start from another run than {source}")
    if verif is not None:
        parts["verif"].load_state_dict(verif.state_dict())
    # the backbone is named only where it is not the default (ResNet-50, stride 2); the input size always
    flags = " ".join(f"--{k}" + ("" if k == "use_dense" else f" {opts[k]}") for k in taken_over
                     if k not in ("use_dense", "stride") or opts[k] != ARCHITECTURE[k])
    head = "verification head of verif_last.pth" if verif is not None else "a new verification head (it saved none)"
    return (f"starting from {source}: backbone and bottleneck of net_last.pth, {head}"
            + f", a new identity classifier for {nclasses} ids (the run's had {trained_opts['nclasses']})"
            + (f"; its {flags} taken over" if flags else ""))


def cosine_factor(args, epoch):
    """--lr_schedule cosine: the multiplier of every initial learning rate during `epoch` (0-based):
    1 at the first epoch, falling along half a cosine, 0 where a next epoch after the last would be."""
    return 0.5 * (1 + math.cos(math.pi * epoch / args.epochs))


def build_training(args, nclasses, device, pretrained):
    """The network, the verification head and how they learn: SGD with Nesterov momentum, the new
    layers at lr and a pretrained backbone at 0.1 x lr, every rate x0.1 after --decay_epoch (or
    along a cosine)."""
    model = build_model({**vars(args), "nclasses": nclasses}, pretrained=pretrained).to(device)
    verif = verif_net().to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # a pretrained backbone (ImageNet's, or an --init_from run's) is fine-tuned gently; one trained from
    # scratch has nothing to preserve
    backbone_lr = 0.1 * args.lr if args.pretrained or args.init_from else args.lr
    optimizer = torch.optim.SGD([
        {"params": model.model.parameters(), "lr": backbone_lr},
        {"params": model.classifier.parameters(), "lr": args.lr},
        {"params": verif.parameters(), "lr": args.lr},
    ], momentum=0.9, weight_decay=5e-4, nesterov=True)
    if args.lr_schedule == "cosine":
        # LambdaLR computes each epoch's rate from the initial one, so the warm-up's own setting of
        # the rates within an epoch does not carry into the next
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: cosine_factor(args, epoch))
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.decay_epoch, gamma=0.1)
    # fp16 gradients underflow without loss scaling; bf16 and fp32 need none (the scaler then does nothing)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    return {"model": model, "verif": verif, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}


def average(args, net):
    """--ema_decay: the moving average of `net` (the network and its verification head), which
    starts as its current weights (an --init_from run's where loaded) and takes in each training
    step. Its BatchNorm statistics are averaged too (use_buffers), so it needs no pass over the
    data to set them."""
    return AveragedModel(net, use_buffers=True, multi_avg_fn=get_ema_multi_avg_fn(args.ema_decay))


def warm_up(args, epoch, steps):
    """The multiplier of every initial learning rate at each step of `epoch` (`steps` steps) during
    --warm_epoch: the schedule's, times a ramp that rises linearly from 0.1 and is 1 at the
    warm-up's last step; None after it. It depends on the epoch and step alone, so a resumed epoch
    replays the same rates."""
    if epoch >= args.warm_epoch:
        return None
    # the step schedule's rate is the initial one until --decay_epoch, which the warm-up never passes
    scheduled = cosine_factor(args, epoch) if args.lr_schedule == "cosine" else 1.0
    return lambda step: scheduled * (0.1 + 0.9 * (epoch + (step + 1) / steps) / args.warm_epoch)


SUMS = ("steps", "total", "loss_id_sum", "loss_verif_sum", "id_correct", "verif_correct")


def forward(net, batch, args, arithmetic):
    """(logits, label, pos_score, neg_score, loss_id, loss_verif) of a batch, in the run's arithmetic."""
    with arithmetic.autocast():
        logits, label, pos_score, neg_score = net(batch)
        return (logits, label, pos_score, neg_score,
                *objective(logits, label, pos_score, neg_score, args.alpha, args.label_smoothing))


def run_epoch(net, loader, device, args, arithmetic, *, desc, optimizer=None, scaler=None, sums=None, stop=None,
              shard=None, lr_scale=None, after_step=None):
    """One pass over `loader`; trains when an optimizer is given, each step's learning rates
    scaled by lr_scale(step) where given (warm_up), calling after_step() after each step where
    given. `sums` carries the running totals of an epoch resumed in the middle. A training step
    whose loss is not finite in reduced precision is done again in fp32, and the run goes on in
    fp32 (in one process; under torchrun the run stops, naming the precision). Returns the totals,
    summed over all processes."""
    training = optimizer is not None
    net.train(training)
    sums = {k: 0 for k in SUMS} | (sums or {})
    local = {k: 0 for k in SUMS}
    bar = tqdm(loader, desc=desc, leave=False, unit="batch", disable=shard is not None and not shard.main)
    with torch.set_grad_enabled(training):
        for batch in bar:
            batch = [b.to(device, non_blocking=True) for b in batch]
            if args.channels_last:
                batch = [b.contiguous(memory_format=torch.channels_last) if b.dim() == 4 else b for b in batch]
            where = f"{desc} step {sums['steps'] + local['steps'] + 1}"
            redo = training and arithmetic.reduced and (shard is None or shard.world == 1)
            # the BatchNorm statistics a failed step took in go back before it is done again
            kept = [b.clone() for b in net.buffers()] if redo else None
            logits, label, pos_score, neg_score, loss_id, loss_verif = forward(net, batch, args, arithmetic)
            precision = arithmetic.precision
            if redo and not torch.isfinite(loss_id + loss_verif):
                failed = (loss_id + loss_verif).item()
                for b, k in zip(net.buffers(), kept):
                    b.copy_(k)
                precision = "fp32"
                logits, label, pos_score, neg_score, loss_id, loss_verif = forward(net, batch, args,
                                                                                   Arithmetic(device, precision))
                if torch.isfinite(loss_id + loss_verif):
                    arithmetic.fall_back(f"the loss became {failed} at {where} under --precision {arithmetic.precision} "
                                         f"and not in fp32, which did this step again")
            loss = loss_id + loss_verif
            stopping = agree_to_stop(loss, where, stop, shard, precision)
            if training:
                if lr_scale is not None:
                    scale = lr_scale(sums["steps"] + local["steps"])
                    for group in optimizer.param_groups:
                        group["lr"] = group["initial_lr"] * scale
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if after_step is not None:
                    after_step()
            n = label.size(0)
            local["steps"] += 1
            local["total"] += n
            local["loss_id_sum"] += loss_id.item() * n
            local["loss_verif_sum"] += loss_verif.item() * n
            local["id_correct"] += (logits.argmax(1) == label).sum().item()
            local["verif_correct"] += (pos_score.argmax(1) == SAME).sum().item() + (neg_score.argmax(1) == DIFFERENT).sum().item()
            bar.set_postfix(loss=f"{(local['loss_id_sum'] + local['loss_verif_sum']) / local['total']:.4f}")
            if stopping:
                break
    if shard is not None and shard.world > 1 and training:
        totals = torch.tensor([float(local[k]) for k in SUMS], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(totals)
        local = {k: (v if k.endswith("_sum") else int(v)) for k, v in zip(SUMS, totals.tolist())}
        local["steps"] //= shard.world
    return {k: sums[k] + local[k] for k in SUMS}


def epoch_stats(sums):
    total = max(sums["total"], 1)
    loss_id, loss_verif = sums["loss_id_sum"] / total, sums["loss_verif_sum"] / total
    return {"loss": loss_id + loss_verif, "loss_id": loss_id, "loss_verif": loss_verif,
            "id_acc": sums["id_correct"] / total, "verif_acc": sums["verif_correct"] / (2 * total)}


def stats_text(phase, stats):
    return (f"{phase} loss {stats['loss']:.4f} (id {stats['loss_id']:.4f} + verif {stats['loss_verif']:.4f}) "
            f"id acc {stats['id_acc']:.4f} verif acc {stats['verif_acc']:.4f}")


def retrieval_features(model, retrieval, device, precision):
    """(descriptors, ids, cameras) of the val queries, then of their training gallery."""
    return [(descriptors(model, loader, device, f"val {name}", precision), labels, cams)
            for name, (loader, labels, cams) in retrieval.items()]


def val_retrieval(model, retrieval, device, precision):
    """Rank@1 and mAP of the val queries against their training gallery, by the evaluation protocol."""
    (q, ql, qc), (g, gl, gc) = retrieval_features(model, retrieval, device, precision)
    found = summarize(rank_queries(q, ql, qc, g, gl, gc)) if len(g) else {"Rank@1": 0.0, "mAP": 0.0}
    return {k: found[k] for k in ("Rank@1", "mAP")}


def calibrate_thresholds(folder, net, retrieval, calibration, device, args, precision):
    """thresholds.yaml for search.py: the same/different thresholds of cosine and of the head at
    each false-accept rate, and the calibration of each into P(same), fitted on the pairs of
    calibration/ (identities never trained on) where the tree has it, else on val queries against
    training images of other cameras (identities trained on)."""
    head = head_weights(net.verif)
    if calibration is not None:
        loader, ids, cams = calibration
        f = descriptors(net.model, loader, device, "calibration", precision)
        found = calibrate_on_people(f, ids, cams, head, "last")
    else:
        (q, ql, qc), (g, gl, gc) = retrieval_features(net.model, retrieval, device, precision)
        found = calibrate(q, ql, qc, g, gl, gc, head=head)
        pairs = (f"{len(q)} val images x {len(g)} training images of the same identities "
                 f"({found['positive_pairs']} positive, {found['negative_pairs']} negative pairs)")
        found = {"checkpoint": "last", "pairs": pairs, "optimistic": args.train_all, "identities_trained_on": True,
                 **found}
    save_thresholds(folder, found)
    pairs = found["pairs"]
    print(f"thresholds for search.py at FAR {', '.join(k.split('=')[1] for k in found['cosine'])} on {pairs}: cosine "
          f"{', '.join(f'{t:.4f}' for t in found['cosine'].values())}; P(same) "
          f"{', '.join(f'{t:.4f}' for t in found['head'].values())}"
          + ("\nnote: with --train_all the val images were trained on: these thresholds are optimistic (they accept "
             "fewer unseen negatives than their FAR says)" if args.train_all and calibration is None else ""))
    unresolved = [far for far in found["cosine"] if found["negative_pairs"] * float(far.split("=")[1]) < 1]
    if unresolved:
        print(f"note: {found['negative_pairs']} negative pairs cannot tell FAR {', '.join(unresolved)} apart from 0: "
              f"the threshold there lies just above the highest negative")


def main(argv=None):
    args = parse_args(argv)
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
        sys.exit("error: --stride 1 changes ResNet-50's last block; DenseNet-121 (--use_dense) has none such: drop one")
    state = check_run_folder(folder, args, defaults=vars(parse_args([])))
    train_set, phases, retrieval = training_data(args)
    opts = dict(vars(args), nclasses=len(train_set.classes))
    if not args.pretrained and not args.init_from and shard.main:
        print("note: --no-pretrained: the backbone starts from random weights, not ImageNet", file=sys.stderr)
    if not args.train_all and shard.main:
        print("note: training on train/, holding out val; the original's train.py trained on train_all whatever "
              "--train_all said: pass --train_all to train on its training set", file=sys.stderr)
    parts = build_training(args, opts["nclasses"], device,
                           pretrained=args.pretrained and state is None and source is None)
    model = parts["model"]
    if source is not None:  # never with --resume
        loaded = init_weights(parts, *source, opts["nclasses"])
        if shard.main:
            print(loaded)
    net = Verification(model, parts["verif"])
    if args.ema_decay:
        parts["ema"] = average(args, net)

    history, first_epoch, sums = {"train": [], "val": []}, 0, None
    if state is None:
        if shard.main:
            for path in run_files(folder):  # --overwrite: the old run goes only now that the new one can start
                os.remove(path)
            save_opts(folder, opts)
    else:
        history, first_epoch, sums = restore_state(state, parts, device)
        if shard.main:
            save_opts(folder, dict(opts, epochs=args.epochs))
            if first_epoch == args.epochs:
                print(f"{folder} has finished its {args.epochs} epochs; nothing left to train (raise --epochs to train on)")
            else:
                print(f"resuming {folder} at epoch {first_epoch + 1}" + (f", step {sums['steps'] + 1}" if sums else ""))

    # what is validated, saved and calibrated: the moving average where one is kept
    kept = parts["ema"].module if "ema" in parts else net
    arithmetic = Arithmetic(device, args.precision)
    some = LabelledImages(train_set.samples, test_transform(args.height, args.width), train_set.loader)
    check_precision(arithmetic, model, first_images(some), "training images", shard)
    trained = torch.nn.parallel.DistributedDataParallel(net) if shard.world > 1 else net
    trained = torch.compile(trained) if args.compile else trained
    with StopRequest() as stop:
        if shard.main:
            print(f"training {args.name}: {len(train_set)} images of {opts['nclasses']} ids on {device}"
                  f"{f' x {shard.world} processes' if shard.world > 1 else ''}, {args.epochs} epochs")
        for epoch in range(first_epoch, args.epochs):
            start, done_before = time.time(), sums["total"] if sums else 0
            progress = f"{epoch + 1}/{args.epochs}"
            skip = sums["steps"] if sums else 0
            loader = epoch_loader(phases["train"], args, epoch, device, train=True, skip=skip, shard=shard)
            totals = run_epoch(trained, loader, device, args, arithmetic, desc=f"train {progress}", optimizer=parts["optimizer"],
                               scaler=parts["scaler"], sums=sums, stop=stop, shard=shard,
                               lr_scale=warm_up(args, epoch, skip + len(loader)),
                               after_step=(lambda: parts["ema"].update_parameters(net)) if "ema" in parts else None)
            if stop.signum is not None:
                if shard.main:
                    save_state(folder, parts, epoch=epoch, sums=totals, history=history)
                stop.exit(folder, f"at epoch {epoch + 1} step {totals['steps']}", shard.main)
            stats = epoch_stats(totals)
            history["train"].append(dict(stats, epoch=epoch + 1))
            # anchors (training items) per second, loading included, over all processes
            line = (f"epoch {progress} | {stats_text('train', stats)} "
                    f"{(totals['total'] - done_before) / (time.time() - start):.1f} samples/s")
            validate = (epoch + 1) % args.val_every == 0 or epoch + 1 == args.epochs
            if "val" in phases and shard.main and validate:  # validation runs in the main process only
                val_loader = epoch_loader(phases["val"], args, epoch, device, train=False)
                stats = epoch_stats(run_epoch(kept, val_loader, device, args, arithmetic,
                                                 desc=f"val {progress}"))
                stats.update(val_retrieval(kept.model, retrieval, device, arithmetic.precision))
                history["val"].append(dict(stats, epoch=epoch + 1))
                line += f" | {stats_text('val', stats)} Rank@1 {stats['Rank@1']:.4f} mAP {stats['mAP']:.4f}"
            sums = None
            line += f" | lr {parts['optimizer'].param_groups[1]['lr']:g} | {time.time() - start:.1f}s"
            parts["scheduler"].step()
            if shard.main:
                print(line)
                with open(os.path.join(folder, "train.log"), "a") as log:
                    log.write(line + "\n")
                draw_curves(os.path.join(folder, "train.png"), history)
                if epoch % 10 == 9:
                    save_weights(folder, epoch, kept.model, kept.verif)
                if (epoch + 1) % args.state_every == 0 or epoch + 1 == args.epochs or stop.signum is not None:
                    save_state(folder, parts, epoch=epoch + 1, sums=None, history=history)
            if shard.world > 1:
                torch.distributed.barrier()  # the others wait while the main process validates and writes
            if stop.signum is not None:
                stop.exit(folder, f"after epoch {epoch + 1}", shard.main)
    if shard.main:
        save_weights(folder, "last", kept.model, kept.verif)
        print(f"saved {checkpoint_path(folder, 'last')}")
        calibration = calibration_images(args.data_dir, args.height, args.width, args.batchsize, args.num_workers)
        if calibration is not None or retrieval is not None:
            calibrate_thresholds(folder, kept, retrieval, calibration, device, args, arithmetic.precision)
    if shard.world > 1:
        check_in_sync(net, shard)
        shard.finish()


if __name__ == "__main__":
    cli.run_main(main)
