"""The images a run trains on: the training set, its augmentation, the dataset of each phase
(anchors with their positives and negatives), and the val queries and training gallery that
validation ranks and the thresholds are calibrated on."""
import os
from dataclasses import dataclass

from torch.utils.data import DataLoader
from torchvision import transforms

from model import VerificationTriplets
from random_erasing import RandomErasing
from reid.cli import UserError
from reid.data import IMAGENET_MEAN, IMAGENET_STD, LabelledImages, image_folder, parse_names, resize, test_transform


@dataclass
class TrainingData:
    """What training_data() finds in a prepared tree."""
    train_set: object  # the training images (torchvision ImageFolder): samples, classes, loader
    phases: dict  # "train" (and "val" where val/ is held out): the dataset of each phase's batches
    retrieval: dict | None  # "query", "gallery": (loader, ids, cameras) of val against training images


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


# Training images are decoded and resized once and kept, where all of them fit in this many bytes
# (the demo's take 2.4 MB, Market-1501's at 64 x 32 80 MB, at 256 x 128 1.3 GB: not kept)
KEPT_BYTES = 512 << 20


class ResizedOnce:
    """A loader of training images that decodes each file and resizes it to the training size on
    first use, then keeps it: later epochs skip the decoding and the bicubic resize (0.6 s of the
    demo's 1.6 s of loading an epoch, M12). The random augmentation that follows is drawn anew each
    time, so the items are exactly those of loading the file again."""

    def __init__(self, loader, resize):
        self.loader, self.resize, self.kept = loader, resize, {}

    def __call__(self, path):
        if path not in self.kept:
            self.kept[path] = self.resize(self.loader(path))
        return self.kept[path]


def augment(args):
    """The training transform after the resize: the original's padding, random crop and flip (and
    --color_jitter), then --erasing_p's random erasing."""
    pad = max(1, round(10 * args.height / 256))  # the original pads 10 pixels at 256 x 128
    steps = [
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


def training_transform(args, images, loader):
    """(transform, loader) of `images` training images read by `loader`: resized once and kept
    (ResizedOnce) where they fit in KEPT_BYTES and are loaded in the main process, else resized
    each time; then augment()."""
    if args.num_workers == 0 and images * args.height * args.width * 3 <= KEPT_BYTES:
        return augment(args), ResizedOnce(loader, resize(args.height, args.width))
    return transforms.Compose([resize(args.height, args.width), augment(args)]), loader


def training_data(args):
    """TrainingData: the training images; the triplet dataset of each phase (anchors from train or
    train_all; val anchors are checked against the training pool); the loaders of val queries
    against training images (validation each epoch, then the calibration of thresholds), None
    without val/."""
    train_set = image_folder(args.data_dir, "train_all" if args.train_all else "train", "--data_dir")
    if len(train_set.classes) < 2:
        raise UserError(f"{train_set.root} holds {len(train_set.classes)} identity; training needs at least two")
    if len(train_set) < args.batchsize:
        raise UserError(f"{train_set.root} holds {len(train_set)} images, fewer than --batchsize {args.batchsize}; "
                        "lower --batchsize")
    if args.sampler == "pk":
        identities = args.batchsize // args.instances
        if len(train_set.classes) < identities:
            # a batch holds each identity once: with fewer, no batch fills and every epoch would train nothing
            raise UserError(f"{train_set.root} holds {len(train_set.classes)} identities, fewer than the {identities} "
                            f"of a --sampler pk batch (--batchsize {args.batchsize} / --instances {args.instances}); "
                            f"lower --batchsize or raise --instances")
    # in the main process only: a worker's memory is gone at the end of each epoch
    transform, loader = training_transform(args, len(train_set), train_set.loader)
    if args.sampler == "pk":
        phases = {"train": LabelledImages(train_set.samples, transform, loader)}
    else:
        phases = {"train": VerificationTriplets(train_set.samples, train_set.samples, transform, loader)}
    retrieval = None
    if not args.train_all or os.path.isdir(os.path.join(args.data_dir, "val")):
        val_set = image_folder(args.data_dir, "val", "--data_dir")
        unknown = sorted(set(val_set.classes) - set(train_set.classes))
        if unknown:
            raise UserError(f"ids {', '.join(unknown[:5])} are in val but not in train; rerun prepare.py")
        val_samples = [(p, train_set.class_to_idx[val_set.classes[t]]) for p, t in val_set.samples]
        if not args.train_all:  # with --train_all the val images are trained on: no validation
            phases["val"] = VerificationTriplets(val_samples, train_set.samples,
                                                 test_transform(args.height, args.width), train_set.loader)
        # retrieval on val as test.py + evaluate.py do it
        query, gallery = retrieval_split(val_samples, train_set.samples)
        transform = test_transform(args.height, args.width)
        retrieval = {name: (DataLoader(LabelledImages(samples, transform, train_set.loader),
                                       batch_size=args.batchsize, num_workers=args.num_workers),
                            *parse_names([path for path, _ in samples]))
                     for name, samples in (("query", query), ("gallery", gallery))}
    return TrainingData(train_set, phases, retrieval)
