"""Stage 2: train the identification + verification network on a prepared tree.

Each training item is an anchor image, a positive (another image of the same
person) and a negative (an image of another person). The loss is
    CE(identity of anchor) + alpha * 0.5 * (CE(verif(f * f_pos), same) + CE(verif(f * f_neg), different))
where f are the L2-normalised 512-d descriptors. Writes model/<name>/ (see runs.py).

--sampler triplet (the original's, default): each anchor brings a positive and a
negative image, three forward passes. --sampler pk: each batch holds P identities x
K images, one forward pass, and each anchor's positive and negative are other
images of the same batch. Under torchrun the batches are split across processes
(DistributedDataParallel); --batchsize stays the total over all of them.
"""
import argparse
import os
import random
import signal
import sys
import time

import matplotlib
matplotlib.use("Agg")  # curves are written to a file; no screen is needed
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from tqdm import tqdm

from data import IMAGENET_MEAN, IMAGENET_STD, image_folder, parse_names, run_main, test_transform
from metrics import rank_queries, summarize
from model import PRECISIONS, build_model, descriptors, verif_net
from random_erasing import RandomErasing
from runs import (STATE, atomic_path, checkpoint_path, load_file, load_opts, run_dir, run_files, save_checkpoint,
                  save_opts, start_processes)

SAME, DIFFERENT = 1, 0  # verification classes, as in model.verif_net


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu_ids", default="0", help="GPU to train on, e.g. 0; -1 (or no CUDA) trains on the CPU")
    p.add_argument("--name", default="ft_ResNet50", help="run name: everything is written to model/<name>/")
    p.add_argument("--data_dir", default="../Market/pytorch", help="the pytorch/ folder written by prepare.py")
    p.add_argument("--train_all", action="store_true", help="train on train_all (train + val); no validation")
    p.add_argument("--batchsize", default=32, type=int, help="anchors per batch (each brings a positive and a negative)")
    p.add_argument("--lr", default=0.1, type=float, help="learning rate of the new layers; a pretrained backbone gets 0.1 x lr")
    p.add_argument("--alpha", default=1.0, type=float, help="weight of the verification loss")
    p.add_argument("--erasing_p", default=0, type=float, help="random erasing probability (0 disables it)")
    p.add_argument("--color_jitter", action="store_true", help="jitter brightness, contrast and saturation by 0.1")
    p.add_argument("--use_dense", action="store_true", help="DenseNet-121 backbone instead of ResNet-50")
    p.add_argument("--epochs", default=60, type=int, help="number of epochs")
    p.add_argument("--decay_epoch", default=40, type=int, help="epoch after which every learning rate is multiplied by 0.1")
    p.add_argument("--seed", default=0, type=int, help="seed of every random number generator (weights, sampling, augmentation)")
    p.add_argument("--height", default=256, type=int, help="input image height")
    p.add_argument("--width", default=128, type=int, help="input image width")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="start from ImageNet weights (torchvision); --no-pretrained trains from scratch")
    p.add_argument("--num_workers", default=min(8, os.cpu_count() or 1), type=int,
                   help="DataLoader worker processes (0 loads in the main process)")
    p.add_argument("--sampler", default="triplet", choices=["triplet", "pk"],
                   help="triplet: a positive and a negative loaded per anchor (the original); "
                        "pk: P identities x K images per batch, pairs formed inside it (one forward pass)")
    p.add_argument("--instances", default=2, type=int,
                   help="--sampler pk: images per identity in a batch (K); 2 gives each anchor one positive "
                        "and the batch the most identities")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="arithmetic of forward and backward: fp32, or bf16/fp16 through autocast (fp16 with loss scaling)")
    p.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels-last memory format (faster convolutions on GPUs and at 256 x 128 on CPUs)")
    p.add_argument("--compile", action="store_true", help="compile the network with torch.compile (slow first steps)")
    p.add_argument("--resume", action="store_true",
                   help="continue model/<name>/ from its state.pth (same options; --epochs may grow)")
    p.add_argument("--overwrite", action="store_true", help="delete the run already in model/<name>/ and start again")
    p.add_argument("--state_every", default=1, type=int,
                   help="write the full training state (state.pth) every this many epochs; also on Ctrl-C and SIGTERM")
    return p.parse_args(argv)


class VerificationTriplets(Dataset):
    """Anchors from `anchors`; positive and negative drawn at random from `pool`
    (the training images), so validation anchors are compared with training images.
    A person with a single image is its own positive."""

    def __init__(self, anchors, pool, transform, loader):
        self.anchors, self.pool, self.transform, self.loader = anchors, pool, transform, loader
        self.pool_labels = torch.tensor([label for _, label in pool])
        self.by_label = {}
        for i, (_, label) in enumerate(pool):
            self.by_label.setdefault(label, []).append(i)

    def __len__(self):
        return len(self.anchors)

    def image(self, path):
        return self.transform(self.loader(path))

    def __getitem__(self, index):
        path, label = self.anchors[index]
        same = [i for i in self.by_label[label] if self.pool[i][0] != path] or self.by_label[label]
        positive = same[int(torch.randint(len(same), (1,)))]
        negative = int(torch.randint(len(self.pool), (1,)))
        while self.pool_labels[negative] == label:
            negative = int(torch.randint(len(self.pool), (1,)))
        return self.image(path), label, self.image(self.pool[positive][0]), self.image(self.pool[negative][0])


class LabelledImages(Dataset):
    """(image, label) of (path, label) samples."""

    def __init__(self, samples, transform, loader):
        self.samples, self.transform, self.loader = samples, transform, loader

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        return self.transform(self.loader(path)), label


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


def draw_curves(path, history):
    """Loss and top-1 error per epoch, train (and val), like the original's train.jpg,
    and the val retrieval Rank@1 and mAP when there is a val split."""
    panels = 3 if history["val"] else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    for phase, style in (("train", "bo-"), ("val", "ro-")):
        if history[phase]:
            epochs = [h["epoch"] for h in history[phase]]
            axes[0].plot(epochs, [h["loss"] for h in history[phase]], style, label=phase)
            axes[1].plot(epochs, [1 - h["id_acc"] for h in history[phase]], style, label=phase)
    titles = ["loss", "top-1 error"]
    if panels == 3:
        epochs = [h["epoch"] for h in history["val"]]
        for key, style in (("Rank@1", "go-"), ("mAP", "mo-")):
            axes[2].plot(epochs, [h[key] for h in history["val"]], style, label=key)
        titles.append("val retrieval (val queries, train gallery)")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


class StopRequest:
    """While active, Ctrl-C or SIGTERM sets `signum`: training saves its state at the end of the
    current step and exits. A second Ctrl-C stops at once. The previous handlers come back after."""

    def __enter__(self):
        self.signum = None
        self.previous = {s: signal.signal(s, self.request) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def request(self, signum, frame):
        if self.signum == signal.SIGINT == signum:
            raise KeyboardInterrupt
        self.signum = signum

    def exit(self, folder, where, announce=True):
        if announce:  # under torchrun, the main process speaks for all
            print(f"stopped by {signal.Signals(self.signum).name} {where}; state saved in {os.path.join(folder, STATE)}; "
                  f"continue with the same command and --resume", file=sys.stderr)
        sys.exit(128 + self.signum)


class Verification(nn.Module):
    """The identity network and the verification head as one module (one DistributedDataParallel
    unit). Given a batch it returns identity logits, labels, and the same/different scores of
    each anchor's pairs with its positive and its negative."""

    def __init__(self, model, verif):
        super().__init__()
        self.model, self.verif = model, verif

    def forward(self, batch):
        if len(batch) == 4:  # triplet loading: anchor, label, positive, negative
            anchor, label, positive, negative = batch
            logits, f = self.model(anchor)
            _, f_pos = self.model(positive)
            _, f_neg = self.model(negative)
        else:  # P x K batch: the pairs come from the features already computed
            images, label = batch
            logits, f = self.model(images)
            positive, negative = in_batch_pairs(label)
            f_pos, f_neg = f[positive], f[negative]
        return logits, label, self.verif(f, f_pos), self.verif(f, f_neg)


def in_batch_pairs(labels):
    """For each image, a random other image of the same identity (itself when it has none)
    and a random image of another identity, as batch indices."""
    same = labels[:, None] == labels[None, :]
    others = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    noise = torch.rand(same.shape, device=labels.device)
    positive = torch.where(others, noise, -1.0).argmax(1)
    positive = torch.where(others.any(1), positive, torch.arange(len(labels), device=labels.device))
    negative = torch.where(~same, noise, -1.0).argmax(1)
    return positive, negative


def run_epoch(net, loader, device, args, optimizer=None, scaler=None, desc="", sums=None, stop=None, shard=None):
    """One pass over `loader`; trains when an optimizer is given. `sums` carries the running
    totals of an epoch resumed in the middle. Returns the totals, summed over all processes."""
    training = optimizer is not None
    net.train(training)
    criterion = nn.CrossEntropyLoss()
    sums = dict(sums or {"steps": 0, "total": 0, "loss_sum": 0.0, "id_correct": 0, "verif_correct": 0})
    local = {k: 0 for k in sums}
    bar = tqdm(loader, desc=desc, leave=False, unit="batch", disable=shard is not None and not shard.main)
    with torch.set_grad_enabled(training):
        for batch in bar:
            batch = [b.to(device, non_blocking=True) for b in batch]
            if args.channels_last:
                batch = [b.contiguous(memory_format=torch.channels_last) if b.dim() == 4 else b for b in batch]
            with torch.autocast(device.type, dtype=PRECISIONS[args.precision], enabled=args.precision != "fp32"):
                logits, label, pos_score, neg_score = net(batch)
                n = label.size(0)
                same = torch.full((n,), SAME, device=device)
                different = torch.full((n,), DIFFERENT, device=device)
                loss = criterion(logits, label) + args.alpha * 0.5 * (criterion(pos_score, same) + criterion(neg_score, different))
            # every process must stop at the same step: agree on NaN and on Ctrl-C / SIGTERM
            flags = torch.tensor([float(not torch.isfinite(loss)), float(stop is not None and stop.signum is not None)],
                                 device=device)
            if shard is not None and shard.world > 1 and training:
                torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            if flags[0]:
                sys.exit(f"error: the loss became {loss.item()} at {desc} step {sums['steps'] + local['steps'] + 1}; "
                         f"the last good state is kept: lower --lr, then start again (--overwrite) or --resume an earlier run")
            if training:
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            local["steps"] += 1
            local["total"] += n
            local["loss_sum"] += loss.item() * n
            local["id_correct"] += (logits.argmax(1) == label).sum().item()
            local["verif_correct"] += (pos_score.argmax(1) == SAME).sum().item() + (neg_score.argmax(1) == DIFFERENT).sum().item()
            bar.set_postfix(loss=f"{local['loss_sum'] / local['total']:.4f}")
            if training and flags[1]:
                if stop.signum is None:  # another process was asked to stop
                    stop.signum = signal.SIGTERM
                break
    if shard is not None and shard.world > 1 and training:
        totals = torch.tensor([float(local[k]) for k in local], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(totals)
        local = {k: (v if k == "loss_sum" else int(v)) for k, v in zip(local, totals.tolist())}
        local["steps"] //= shard.world
    return {k: sums[k] + local[k] for k in sums}


def val_retrieval(model, retrieval, device, precision):
    """Rank@1 and mAP of the val queries against their training gallery, by the evaluation protocol."""
    (q, ql, qc), (g, gl, gc) = ((descriptors(model, loader, device, f"val {name}", precision), labels, cams)
                                for name, (loader, labels, cams) in retrieval.items())
    found = summarize(rank_queries(q, ql, qc, g, gl, gc)) if len(g) else {"Rank@1": 0.0, "mAP": 0.0}
    return {k: found[k] for k in ("Rank@1", "mAP")}


def epoch_stats(sums):
    total = max(sums["total"], 1)
    return {"loss": sums["loss_sum"] / total, "id_acc": sums["id_correct"] / total, "verif_acc": sums["verif_correct"] / (2 * total)}


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


# options that may differ when a run is resumed: they do not change what is trained
RESUMABLE = {"gpu_ids", "num_workers", "resume", "overwrite", "epochs", "state_every", "precision", "channels_last", "compile"}


def check_run_folder(folder, args):
    """Refuse to mix two runs in one folder; with --resume, the saved state and options."""
    opts_file, state_file = os.path.join(folder, "opts.yaml"), os.path.join(folder, STATE)
    if args.resume and args.overwrite:
        sys.exit("error: --resume and --overwrite contradict each other; choose one")
    if args.resume:
        if not os.path.isfile(state_file):
            sys.exit(f"error: --resume: {state_file} not found, so there is nothing to resume; drop --resume to start "
                     f"a run (add --overwrite if {folder} holds one)")
        saved = load_opts(folder)
        changed = [f"--{k} {saved.get(k)!r} -> {v!r}" for k, v in vars(args).items()
                   if k not in RESUMABLE and saved.get(k) != v]
        if changed:
            sys.exit(f"error: --resume continues {folder} with its own options, but these differ: {', '.join(changed)}; "
                     f"pass the same ones, or start a new run with another --name")
        state = load_file(state_file, f"start again with --overwrite, or use a copy of {folder}")
        if state["epoch"] > args.epochs:
            sys.exit(f"error: {folder} has trained {state['epoch']} epochs already, more than --epochs {args.epochs}")
        return state
    if os.path.isfile(opts_file) and not args.overwrite:
        sys.exit(f"error: {folder} already holds a run; pass --resume to continue it, --overwrite to delete it and "
                 f"start again, or choose another --name")
    return None


def save_state(folder, model, verif, optimizer, scheduler, scaler, epoch, sums, history):
    """Everything a resume needs, written atomically: `epoch` is the epoch in progress (0-based)
    and sums its running totals (None at an epoch boundary)."""
    save_checkpoint(os.path.join(folder, STATE), {
        "epoch": epoch, "sums": sums, "history": history,
        "model": model.state_dict(), "verif": verif.state_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
        "rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    })


def training_data(args):
    """The training images; the triplet dataset of each phase (anchors from train or train_all;
    val anchors are checked against the training pool); the val retrieval loaders (None with --train_all)."""
    train_set = image_folder(args.data_dir, "train_all" if args.train_all else "train", "--data_dir")
    if len(train_set.classes) < 2:
        sys.exit(f"error: {train_set.root} holds {len(train_set.classes)} identity; training needs at least two")
    if len(train_set) < args.batchsize:
        sys.exit(f"error: {train_set.root} holds {len(train_set)} images, fewer than --batchsize {args.batchsize}; lower --batchsize")
    if args.sampler == "pk":
        phases = {"train": LabelledImages(train_set.samples, train_transform(args), train_set.loader)}
    else:
        phases = {"train": VerificationTriplets(train_set.samples, train_set.samples, train_transform(args), train_set.loader)}
    retrieval = None
    if not args.train_all:
        val_set = image_folder(args.data_dir, "val", "--data_dir")
        unknown = sorted(set(val_set.classes) - set(train_set.classes))
        if unknown:
            sys.exit(f"error: ids {', '.join(unknown[:5])} are in val but not in train; rerun prepare.py")
        val_samples = [(p, train_set.class_to_idx[val_set.classes[t]]) for p, t in val_set.samples]
        phases["val"] = VerificationTriplets(val_samples, train_set.samples, test_transform(args.height, args.width), train_set.loader)
        # retrieval on val as test.py + evaluate.py do it, each epoch
        query, gallery = retrieval_split(val_samples, train_set.samples)
        retrieval = {name: (DataLoader(LabelledImages(samples, test_transform(args.height, args.width), train_set.loader),
                                       batch_size=args.batchsize, num_workers=args.num_workers),
                            *parse_names([path for path, _ in samples]))
                     for name, samples in (("query", query), ("gallery", gallery))}
    return train_set, phases, retrieval


def check_batches(args, shard):
    if args.batchsize % shard.world:
        sys.exit(f"error: --batchsize {args.batchsize} is the total over {shard.world} processes; make it a multiple of it")
    if args.sampler == "pk" and (args.instances < 2 or (args.batchsize // args.instances) % shard.world
                                 or args.batchsize % args.instances):
        sys.exit(f"error: --sampler pk needs --instances of 2 or more dividing --batchsize {args.batchsize} into "
                 f"identities that split evenly over {shard.world} process(es)")


def main(argv=None):
    args = parse_args(argv)
    shard, device = start_processes(args.gpu_ids)
    check_batches(args, shard)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    folder = run_dir(args.name)
    state = check_run_folder(folder, args)
    train_set, phases, retrieval = training_data(args)

    # model: new layers at lr, the backbone at 0.1 x lr when pretrained
    opts = dict(vars(args), nclasses=len(train_set.classes))
    if not args.pretrained and shard.main:
        print("note: --no-pretrained: the backbone starts from random weights, not ImageNet", file=sys.stderr)
    model = build_model(opts, pretrained=args.pretrained and state is None).to(device)
    verif = verif_net().to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # a pretrained backbone is fine-tuned gently; one trained from scratch has nothing to preserve
    backbone_lr = 0.1 * args.lr if args.pretrained else args.lr
    optimizer = torch.optim.SGD([
        {"params": model.model.parameters(), "lr": backbone_lr},
        {"params": model.classifier.parameters(), "lr": args.lr},
        {"params": verif.parameters(), "lr": args.lr},
    ], momentum=0.9, weight_decay=5e-4, nesterov=True)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.decay_epoch, gamma=0.1)
    # fp16 gradients underflow without loss scaling; bf16 and fp32 need none (the scaler then does nothing)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")

    history, first_epoch, sums = {"train": [], "val": []}, 0, None
    if state is None:
        if shard.main:
            for path in run_files(folder):  # --overwrite: the old run goes only now that the new one can start
                os.remove(path)
            save_opts(folder, opts)
    else:
        model.load_state_dict(state["model"])
        verif.load_state_dict(state["verif"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        history, first_epoch, sums = state["history"], state["epoch"], state["sums"]
        if shard.main:
            save_opts(folder, dict(opts, epochs=args.epochs))
            if first_epoch == args.epochs:
                print(f"{folder} has finished its {args.epochs} epochs; nothing left to train (raise --epochs to train on)")
            else:
                print(f"resuming {folder} at epoch {first_epoch + 1}" + (f", step {sums['steps'] + 1}" if sums else ""))

    net = Verification(model, verif)
    trained = torch.nn.parallel.DistributedDataParallel(net) if shard.world > 1 else net
    trained = torch.compile(trained) if args.compile else trained
    with StopRequest() as stop:
        if shard.main:
            print(f"training {args.name}: {len(train_set)} images of {opts['nclasses']} ids on {device}"
                  f"{f' x {shard.world} processes' if shard.world > 1 else ''}, {args.epochs} epochs")
        for epoch in range(first_epoch, args.epochs):
            start = time.time()
            line = f"epoch {epoch + 1}/{args.epochs}"
            for phase, dataset in phases.items():
                training = phase == "train"
                if not training and not shard.main:
                    continue  # validation runs in the main process only
                skip = sums["steps"] if training and sums else 0
                already, phase_start = sums["total"] if training and sums else 0, time.time()
                loader = epoch_loader(dataset, args, epoch, device, training, skip, shard)
                totals = run_epoch(trained if training else net, loader, device, args, optimizer if training else None,
                                   scaler, f"{phase} {epoch + 1}/{args.epochs}", sums if training else None, stop, shard)
                if training and stop.signum is not None:
                    if shard.main:
                        save_state(folder, model, verif, optimizer, scheduler, scaler, epoch, totals, history)
                    stop.exit(folder, f"at epoch {epoch + 1} step {totals['steps']}", shard.main)
                stats = epoch_stats(totals)
                line += f" | {phase} loss {stats['loss']:.4f} id acc {stats['id_acc']:.4f} verif acc {stats['verif_acc']:.4f}"
                if training:  # anchors (training items) per second, loading included, over all processes
                    line += f" {(totals['total'] - already) / (time.time() - phase_start):.1f} samples/s"
                if phase == "val":
                    stats.update(val_retrieval(model, retrieval, device, args.precision))
                    line += f" Rank@1 {stats['Rank@1']:.4f} mAP {stats['mAP']:.4f}"
                history[phase].append(dict(stats, epoch=epoch + 1))
            sums = None
            line += f" | lr {optimizer.param_groups[1]['lr']:g} | {time.time() - start:.1f}s"
            scheduler.step()
            if shard.main:
                print(line)
                with open(os.path.join(folder, "train.log"), "a") as log:
                    log.write(line + "\n")
                draw_curves(os.path.join(folder, "train.png"), history)
                if epoch % 10 == 9:
                    save_checkpoint(checkpoint_path(folder, epoch), model.state_dict())
                if (epoch + 1) % args.state_every == 0 or epoch + 1 == args.epochs or stop.signum is not None:
                    save_state(folder, model, verif, optimizer, scheduler, scaler, epoch + 1, None, history)
            if shard.world > 1:
                torch.distributed.barrier()  # the others wait while the main process validates and writes
            if stop.signum is not None:
                stop.exit(folder, f"after epoch {epoch + 1}", shard.main)
    if shard.main:
        save_checkpoint(checkpoint_path(folder, "last"), model.state_dict())
        print(f"saved {checkpoint_path(folder, 'last')}")
    if shard.world > 1:
        check_in_sync(net, shard)
        shard.finish()


def check_in_sync(net, shard):
    """DistributedDataParallel keeps every process's weights equal; say so, or stop if not."""
    fingerprint = torch.stack([p.detach().double().sum() for p in net.parameters()])
    everyone = [torch.zeros_like(fingerprint) for _ in range(shard.world)]
    torch.distributed.all_gather(everyone, fingerprint)
    if shard.main:
        if not all(torch.equal(f, everyone[0]) for f in everyone):
            sys.exit(f"error: the weights of the {shard.world} processes differ at the end of training")
        print(f"weights identical on all {shard.world} processes")


if __name__ == "__main__":
    run_main(main)
