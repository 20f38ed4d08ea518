"""Adapt a trained run to new cameras from their unlabelled images, and write it as a run of its own
(model/<name>/, the layout of train_new.py) that test.py, search.py and export.py use as any run.

    python adapt.py --source market_run --name my_cameras --images cam1/ cam2/ cam3/

Each --images folder is one camera; the images' names are never read for a label. Rounds of:
  1. describe every image with the current network (the source run's, at first);
  2. group the descriptors into pseudo-identities (reid/grouping.py): k-reciprocal Jaccard distances
     on each image's nearest neighbours, DBSCAN on that sparse graph, no N x N matrix. The first
     --within_rounds rounds group each camera apart, and each image's identity loss is contested
     only by its own camera's groups (the intra-camera stage of IICS: Xuan and Zhang, "Intra-Inter
     Camera Similarity for Unsupervised Person Re-Identification", CVPR 2021), as a weak network
     tells people apart far better within a camera than across; later rounds group across cameras,
     each descriptor less its camera's mean;
  3. train --epochs epochs on the grouped images by the paper's objective (identity over the groups
     + alpha x verification of pairs within and across groups in P x K batches), from the network of
     the round before with a new identity classifier.
Images left out of every group (DBSCAN's noise) are not trained on that round.
"""
import dataclasses
import hashlib
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from model import IDENTITY_CLASSIFIER, Verification, head_weights, load_trained, load_verif
from reid import cli, grouping
from reid.cli import UserError
from reid.data import LabelledImages, load_image, test_transform
from reid.devices import Arithmetic, loader_workers, note_emulated, start_processes
from reid.evaluation.metrics import Side
from reid.evaluation.verification import calibrate, save_thresholds
from reid.runs import STATE, atomic_path, checkpoint_path, run_dir, run_files, save_opts, save_weights
from reid.search import footage as fo
from reid.search import gallery, tracking
from reid.training.data import TrainingData, training_transform
from reid.training.loop import Progress, build_training, train_epochs
from reid.training.options import parse_args as training_flags
from reid.training.start import find_run, init_weights

ROUNDS_LOG = "rounds.log"
# images whose pairs fit the thresholds of the adapted run (all pairs of them: 4.5 million at 3000)
CALIBRATION_IMAGES = 3000
GROUPS = "groups.npz"
TEMPERATURE = 0.05  # of the identity classifier started at the groups' means: logits = cosine / 0.05
CROPS = "crops"  # where footage's boxes are cut to, in the adapted run's folder


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--source", required=True, metavar="RUN",
                   help="the trained run to adapt (model/<name>, or its name)")
    cli.add_run_flags(p, "to write (the adapted run)", which_epoch=False)
    p.add_argument("--images", nargs="+", required=True, metavar="PATH",
                   help="one camera each: a folder of images (searched recursively; no label is read from the names), "
                        "a video file or a MOTChallenge sequence folder (its boxes: --detections, its det/det.txt, "
                        "or the person detector)")
    cli.add_device_flags(p, "adapt")
    cli.add_footage_flags(p, "--images")
    p.add_argument("--rounds", default=4, type=int, help="rounds of describing, grouping and training")
    p.add_argument("--within_rounds", default=2, type=int,
                   help="how many of the first rounds group each camera apart (the rest group across cameras)")
    p.add_argument("--epochs", default=1, type=int, help="training epochs per round, over the grouped images")
    p.add_argument("--eps", default=str(grouping.EPS),
                   help="DBSCAN's radius in k-reciprocal Jaccard distance (0 to 1): larger groups more images, "
                        f"less purely; {grouping.AUTO}: each camera's (or, across cameras, all images') median "
                        "distance to their nearest other image, with no labels to tune it on")
    p.add_argument("--k1", default=grouping.K1, type=int, help="neighbours of each image in the k-reciprocal sets")
    p.add_argument("--k2", default=grouping.K2, type=int, help="neighbours whose sets are averaged into each image's")
    p.add_argument("--min_samples", default=grouping.MIN_SAMPLES, type=int,
                   help="DBSCAN: images within --eps (itself counted) that make an image the core of a group")
    p.add_argument("--lr", default=0.01, type=float,
                   help="learning rate of the new identity classifier and the head; the backbone gets 0.1 x lr")
    p.add_argument("--batchsize", default=64, type=int, help="images per batch (P groups x --instances images)")
    p.add_argument("--instances", default=2, type=int, help="images of each group in a batch")
    p.add_argument("--seed", default=0, type=int, help="seed of every random number generator")
    p.add_argument("--overwrite", action="store_true", help="delete the run already in model/<name>/ and start again")
    p.add_argument("--resume", action="store_true",
                   help="continue model/<name>/ after its last finished round (a round stopped midway, by Ctrl-C, "
                        "starts again)")
    return p.parse_args(argv)


def eps_value(text):
    """--eps: a Jaccard distance strictly between 0 and 1, or grouping.AUTO; else a UserError."""
    if text == grouping.AUTO:
        return text
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < 1:
        raise UserError(f"--eps {text} is neither a Jaccard distance between 0 and 1 (such as {grouping.EPS}) nor "
                        f"{grouping.AUTO}")
    return value


@dataclass
class Target:
    """The images of the new cameras: their paths and camera (the index of its --images PATH), and
    what footage tells without labels, as (first, second) index arrays: pairs of one person (boxes
    of one tracklet, one after the other) and of two (boxes of one frame apart)."""
    images: list
    cameras: np.ndarray
    must: tuple
    cannot: tuple
    views: np.ndarray  # what the thresholds count as another sighting: a folder's camera, footage's tracklet


def target_images(args, describer, folder):
    """The Target of the --images PATHs. A folder's images are taken in the order of their contents,
    not their names, so that renamed images adapt the same; footage's boxes (the tracklets
    search.py would link, described by the source run) are cut into folder/crops/<camera>/."""
    images, cameras, views, must, cannot = [], [], [], [[], []], [[], []]
    footage = [path for path in args.images if fo.is_footage(path)]
    detections = gallery.footage_detections(args, footage)
    for camera, path in enumerate(args.images):
        if path in detections:
            d = gallery.describe_at(path, detections[path], describer, args, [])
            boxes = d.boxes()
            crops = os.path.join(folder, CROPS, f"{camera}")
            os.makedirs(crops, exist_ok=True)
            rows = {}
            for k, box in enumerate(boxes):
                rows.setdefault(box, []).append(k)
            found = [None] * len(boxes)
            for box, crop in fo.crop_boxes(d.footage, boxes):
                k = rows[box].pop()
                found[k] = os.path.join(crops, f"{box.frame:06d}_{k:06d}.jpg")
                crop.save(found[k], quality=95)
            offset = len(images)
            for start, stop in d.spans():
                must[0] += range(offset + start, offset + stop - 1)
                must[1] += range(offset + start + 1, offset + stop)
            first, second = tracking.same_frame_pairs(boxes)
            cannot[0] += (first + offset).tolist()
            cannot[1] += (second + offset).tolist()
            views += (d.owners() + len(args.images) + len(views)).tolist()
        else:
            found = sorted(gallery.list_images(path, "--images"), key=content_hash)
            views += [camera] * len(found)
        images += found
        cameras += [camera] * len(found)
    if len(set(images)) < len(images):
        raise UserError("an image is listed under two --images folders; give each camera's folder once")
    return Target(images, np.array(cameras), tuple(map(np.array, must)), tuple(map(np.array, cannot)),
                  np.array(views))


def describe(describer, model, images, shard):
    """Every image's descriptor by `model`; under torchrun each process describes its share."""
    return shard.share(dataclasses.replace(describer, model=model).extract(shard.take(images), "describe")[0])


def content_hash(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).digest()


def target_thresholds(features, labels, views, head, seed):
    """thresholds.yaml's content fitted on the new cameras without labels, or None where they give
    no pair of each kind: pairs of up to CALIBRATION_IMAGES grouped images, the adapted network's
    groups across cameras taken as the people (a pair of one group in two views, two cameras of
    image folders or two tracklets of footage, is a positive; of two groups a negative). Two groups
    are seldom one person, so the negatives can be trusted; a positive is only as right as its group
    is pure, and the groups are what the last round trained on: optimistic."""
    grouped = np.flatnonzero(labels >= 0)
    taken = np.sort(np.random.default_rng(seed).permutation(grouped)[:CALIBRATION_IMAGES])
    ids = labels[taken]
    same = ids[:, None] == ids[None, :]
    apart = views[taken][:, None] != views[taken][None, :]
    if not (same & apart).any() or same.all():
        return None
    side = Side(features[taken], ids + 1, views[taken])  # ids from 1: 0 and -1 mean distractor and junk
    found = calibrate(side, side, head=head, symmetric=True)
    pairs = (f"{len(taken)} images of the new cameras in {len(np.unique(ids))} of the adaptation's groups, "
             f"no labels ({found['positive_pairs']} positive pairs, one group in two cameras or tracklets; "
             f"{found['negative_pairs']} negative pairs, two groups)")
    return {"checkpoint": "last", "pairs": pairs, "optimistic": True, "identities_trained_on": True, **found}


def keep_groups(folder, images, round_, labels):
    """Add round `round_`'s group of each image (-1: left out) to folder/groups.npz, beside the
    image paths: what a benchmark scores the grouping by, with labels adapt.py never reads."""
    path = os.path.join(folder, GROUPS)
    kept = {}
    if os.path.isfile(path):
        with np.load(path, allow_pickle=False) as saved:
            kept = {k: saved[k] for k in saved.files if k.startswith("round_") and int(k[6:]) < round_}
    kept[f"round_{round_}"] = labels
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, images=np.array(images), **kept)


@torch.no_grad()
def bottleneck_length(model, images, size, device, n=256):
    """The mean length of the bottleneck's output (what the identity classifier sees, before it is
    normalised) over the first `n` images."""
    lengths = []
    hook = model.classifier.add_block.register_forward_hook(lambda m, i, out: lengths.append(out.norm(dim=1)))
    model.eval()
    transform = test_transform(*size)
    model(torch.stack([transform(load_image(p)) for p in images[:n]]).to(device))
    hook.remove()
    return float(torch.cat(lengths).mean())


def centroid_classifier(training, features, labels, length):
    """Start the new identity classifier at each group's mean descriptor, scaled so that a
    descriptor's logits are its cosine similarities to the means / TEMPERATURE, instead of at random:
    a round of an epoch or two would otherwise spend most of it learning the classifier (as MMT
    and cluster-contrast methods start theirs from the groups' centres)."""
    grouped = labels >= 0
    means = np.zeros((int(labels.max()) + 1, features.shape[1]), np.float64)
    np.add.at(means, labels[grouped], features[grouped])
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    layer = training.net.model.classifier.classifier[-1]
    scale = 1 / (TEMPERATURE * length)  # `length`: the bottleneck's typical output length (bottleneck_length)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(means * scale, dtype=layer.weight.dtype))
        layer.bias.zero_()


def finished_rounds(folder):
    """How many rounds --resume finds done in `folder` (rounds.log's lines), or a UserError."""
    log = os.path.join(folder, ROUNDS_LOG)
    if not os.path.isfile(log) or not os.path.isfile(checkpoint_path(folder, "last")):
        raise UserError(f"--resume: {folder} holds no round finished by adapt.py; start it without --resume")
    with open(log) as f:
        return sum(1 for line in f if line.startswith("round "))


def adapted_opts(args, source_opts, groups):
    """opts.yaml of the adapted run: the source run's network and input size (test.py rebuilds it
    from them), its last round's groups as classes, where it came from and how it was adapted."""
    return dict(source_opts, name=args.name, nclasses=groups, init_from=args.source, adapted_from=args.source,
                adapt={k: v for k, v in vars(args).items()
                       if k not in ("name", "source", "gpu_ids", "num_workers", "resume", "overwrite")},
                data_dir=None, epochs=args.rounds * args.epochs, train_all=True)


def round_flags(args, source_opts, nclasses, folder):
    """The options of one round's training, as train_new.py's parser resolves them (so the loop
    trains exactly as train_new.py does): P x K batches, the step schedule never reached, and the
    source run's network, input size, alpha and augmentation."""
    flags = training_flags(["--name", os.path.basename(folder), "--sampler", "pk", "--instances", str(args.instances),
                            "--batchsize", str(args.batchsize), "--lr", str(args.lr), "--epochs", str(args.epochs),
                            "--decay_epoch", str(args.epochs + 1), "--seed", str(args.seed), "--no-pretrained",
                            "--state_every", str(args.epochs + 1), "--num_workers", str(args.num_workers),
                            "--precision", args.precision])
    for k in ("use_dense", "stride", "height", "width", "alpha", "erasing_p", "color_jitter", "label_smoothing",
              "channels_last"):
        setattr(flags, k, source_opts.get(k, getattr(flags, k)))
    flags.init_from = args.source  # the backbone learns at 0.1 x lr, as a pretrained one
    flags.nclasses = nclasses
    return flags


def main(argv=None):
    args = parse_args(argv)
    shard, device = start_processes(args.gpu_ids)
    args.num_workers = loader_workers(args.num_workers, device)
    note_emulated(device, args.precision)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if not 1 <= args.rounds or not 0 <= args.within_rounds <= args.rounds or args.epochs < 1:
        raise UserError("--rounds and --epochs must be 1 or more, --within_rounds between 0 and --rounds")
    args.eps = eps_value(args.eps)
    args.source = find_run(args.source, "--source")
    folder = run_dir(args.name)
    if os.path.abspath(folder) == os.path.abspath(args.source):
        raise UserError(f"--name {args.name} is the --source run; give the adapted run a name of its own")
    if args.resume and args.overwrite:
        raise UserError("--resume continues the run in model/<name>/ and --overwrite deletes it: give one of them")
    done = finished_rounds(folder) if args.resume else 0
    if not args.resume and run_files(folder) and not args.overwrite:
        raise UserError(f"{folder} already holds a run; pass --overwrite to replace it, --resume to continue it, or "
                        f"another --name")
    model, source_opts = load_trained(args.source)
    size = (source_opts["height"], source_opts["width"])
    if not args.resume and shard.main:
        for path in run_files(folder):  # --overwrite: the old run goes only now that the new one can start
            os.remove(path)
        shutil.rmtree(os.path.join(folder, CROPS), ignore_errors=True)
        if os.path.isfile(os.path.join(folder, ROUNDS_LOG)):
            os.remove(os.path.join(folder, ROUNDS_LOG))
    os.makedirs(folder, exist_ok=True)
    # footage is described by the source run, in its cache, as search.py describes it
    describer = gallery.Describer(model.to(device).eval(), device, args.source, "last", size, args.precision,
                                  args.batchsize, args.num_workers)
    # footage's boxes are cut once, by the first process; the others wait for its list
    target = shard.broadcast(target_images(args, describer, folder) if shard.main else None)
    images, cameras = target.images, target.cameras
    if len(images) < 2 * args.min_samples:
        raise UserError(f"--images holds {len(images)} image(s), too few to group (at least {2 * args.min_samples})")
    arithmetic = Arithmetic(device, args.precision)
    transform, loader = training_transform(round_flags(args, source_opts, 0, folder), len(images), load_image)
    net, start = None, time.time()
    if done:
        net = Verification(load_trained(folder)[0], load_verif(folder)).to(device)
        if shard.main:
            print(f"resuming {folder} after round {done} of {args.rounds}")
    if shard.main:
        print(f"adapting {args.source} to {len(images)} images of {len(args.images)} camera(s): {args.rounds} rounds")
    for round_ in range(done + 1, args.rounds + 1):
        across = round_ > args.within_rounds
        current = model if net is None else net.model
        features = describe(describer, current.to(device), images, shard)
        used = []
        labels = shard.broadcast(grouping.pseudo_identities(features, cameras, across, args.eps, args.k1, args.k2,
                                                            args.min_samples, must=target.must, cannot=target.cannot,
                                                            eps_used=used)
                                 if shard.main else None)
        grouped = labels >= 0
        groups = int(labels.max()) + 1
        chosen = "" if args.eps != grouping.AUTO or not shard.main else (
            f", eps {min(used):.3f}" + (f" to {max(used):.3f}" if max(used) > min(used) else ""))
        line = (f"round {round_}/{args.rounds}: {groups} groups of {int(grouped.sum())} images "
                f"({'across cameras' if across else 'within each camera'}{chosen}), {int((~grouped).sum())} left out")
        if groups < 2:
            than = f" than {grouping.AUTO} chose" if args.eps == grouping.AUTO else ""
            fix = (f"a smaller --eps{than} (it joined them all)" if groups and grouped.all()
                   else f"more images, or a larger --eps{than}")
            raise UserError(f"{line}: training needs two groups or more; give {fix}")
        if shard.main:
            keep_groups(folder, images, round_, labels)
        flags = round_flags(args, source_opts, groups, folder)
        if groups < args.batchsize // args.instances:  # a batch holds each group once
            flags.batchsize = groups * args.instances
            if shard.main:
                print(f"note: {groups} groups, fewer than the {args.batchsize // args.instances} of a batch: batches "
                      f"of {flags.batchsize} images this round")
        training = build_training(flags, groups, device, pretrained=False)
        if net is None:
            init_weights(training.net, args.source, source_opts, [], groups)
        else:
            state = {k: v for k, v in net.model.state_dict().items() if not k.startswith(IDENTITY_CLASSIFIER)}
            training.net.model.load_state_dict(state, strict=False)
            training.net.verif.load_state_dict(net.verif.state_dict())
        centroid_classifier(training, features, labels, bottleneck_length(training.net.model, images, size, device))
        if not across:
            group_camera = np.zeros(groups, np.int64)
            group_camera[labels[grouped]] = cameras[grouped]
            training.net.rivals = torch.as_tensor(group_camera, device=device)
        samples = [(p, int(g)) for p, g in zip(images, labels) if g >= 0]
        data = TrainingData(None, {"train": LabelledImages(samples, transform, loader)}, None)
        train_epochs(training, data, flags, Progress(), arithmetic=arithmetic, device=device, shard=shard,
                     folder=folder)
        net = training.kept
        net.rivals = None
        line += f", trained {args.epochs} epoch(s); {time.time() - start:.0f} s so far"
        if shard.main:
            print(line)
            # the round's network is the run's until the next one ends: --resume continues after it
            save_weights(folder, "last", net.model, net.verif)
            save_opts(folder, adapted_opts(args, source_opts, groups))
            with open(os.path.join(folder, ROUNDS_LOG), "a") as f:
                f.write(line + "\n")
    features = describe(describer, net.model, images, shard)
    shard.finish()
    if not shard.main:
        return
    labels = grouping.pseudo_identities(features, cameras, True, args.eps, args.k1, args.k2, args.min_samples,
                                        must=target.must, cannot=target.cannot)
    thresholds = target_thresholds(features, labels, target.views, head_weights(net.verif), args.seed)
    if thresholds is None:
        print(f"note: no thresholds.yaml: the adapted groups hold no pair of one group seen in two cameras or "
              f"tracklets, or no pair of two groups; search.py with this run needs --threshold, or "
              f"calibrate.py --name {args.name} on labelled people of these cameras", file=sys.stderr)
    else:
        save_thresholds(folder, thresholds)
        print(f"thresholds for search.py fitted on {thresholds['pairs']}: cosine "
              f"{', '.join(f'{k} {t:.4f}' for k, t in thresholds['cosine'].items())}")
    if os.path.isfile(os.path.join(folder, STATE)):
        os.remove(os.path.join(folder, STATE))  # a round's training state: a resumed round starts anew
    print(f"saved {checkpoint_path(folder, 'last')}; {time.time() - start:.0f} s")


if __name__ == "__main__":
    cli.run_main(main)
