"""The method of "A Discriminatively Learned CNN Embedding for Person Re-identification"
(Zheng, Zheng and Yang, TOMM 2017), all in this file:

    ft_net        an ImageNet backbone (ResNet-50, its last block's stride 2 or 1; DenseNet-121 with
                  --use_dense), pooled, then a
                  512-d bottleneck (Linear + BatchNorm) whose L2-normalised output f is the descriptor,
                  and an identity classifier on the bottleneck
    verif_net     the verification head: Linear(512, 2) on f1 * f2 (the "square layer"), same/different
    Verification  both as one module: a batch in, identity logits and the scores of each anchor's
                  pair with a positive (same person) and with a negative (another person) out
    objective     loss = identity loss + alpha * verification loss:
                      loss_id    = CE(logits, identity)
                      loss_verif = alpha * 0.5 * (CE(verif(f * f_pos), SAME) + CE(verif(f * f_neg), DIFFERENT))
    Descriptor    the test-time descriptor: f of the image and of its horizontal flip, summed, normalised

build_model() is the only place that turns a run's saved options into a network; load_trained()
also rebuilds the runs of the original code (layumi/Person-reID-verification) from their folders as they are.
"""
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import models
from tqdm import tqdm

from reid.cli import UserError
from reid.devices import CHECK_IMAGES, autocast
from reid.runs import head_path, load_checkpoint, load_file, load_opts

FEATURE_DIM = 512
SAME, DIFFERENT = 1, 0  # the verification head's classes (the original code numbers them the other way)


def init_kaiming(m):
    if isinstance(m, nn.Linear):
        nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out")
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm1d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def init_classifier(m):
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.001)
        nn.init.zeros_(m.bias)


class ClassBlock(nn.Module):
    """Bottleneck (Linear, BatchNorm) then Dropout and the identity classifier.
    Returns the logits and the L2-normalised bottleneck output (the descriptor)."""

    def __init__(self, input_dim, class_num, num_bottleneck=FEATURE_DIM):
        super().__init__()
        self.add_block = nn.Sequential(nn.Linear(input_dim, num_bottleneck), nn.BatchNorm1d(num_bottleneck))
        self.add_block.apply(init_kaiming)
        self.classifier = nn.Sequential(nn.Dropout(p=0.5), nn.Linear(num_bottleneck, class_num))
        self.classifier.apply(init_classifier)

    def forward(self, x):
        f = self.add_block(x)
        return self.classifier(f), F.normalize(f, p=2, dim=1)


def load_backbone(constructor, weights):
    """A torchvision backbone, with ImageNet weights when `weights` is given.
    Without a network the download fails; say how to go on instead of a traceback."""
    try:
        return constructor(weights=weights)
    except (OSError, RuntimeError) as e:
        folder = torch.hub.get_dir() + "/checkpoints"
        raise UserError(f"cannot load the ImageNet weights {weights.url.rsplit('/', 1)[-1]} ({e}); "
                        f"pass --no-pretrained to train from scratch, or place that file in {folder} "
                        f"(set TORCH_HOME to use another folder)") from None


class ft_net(nn.Module):
    """ResNet-50 with global average pooling (2048-d) and the bottleneck block. With fc = Identity,
    torchvision's forward is the original code's (conv1 ... layer4, pooling, flatten), so its runs
    load into this network as they are."""

    def __init__(self, class_num, pretrained=True, stride=2):
        super().__init__()
        weights = models.ResNet50_Weights.IMAGENET1K_V1 if pretrained else None
        self.model = load_backbone(models.resnet50, weights)
        if stride == 1:
            # the last block keeps its input's resolution: a feature map of 4 x 2 instead of 2 x 1 at 64 x 32
            # (no weight changes shape, so ImageNet weights and trained runs load as they are)
            self.model.layer4[0].conv2.stride = (1, 1)
            self.model.layer4[0].downsample[0].stride = (1, 1)
        self.model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.model.fc = nn.Identity()
        self.classifier = ClassBlock(2048, class_num)

    def forward(self, x):
        return self.classifier(self.model(x))


class ft_net_dense(nn.Module):
    """DenseNet-121 with global average pooling (1024-d) and the bottleneck block. torchvision's
    DenseNet applies a ReLU to its last feature map before pooling; the original code pools that
    map as it is, so its runs, trained that way, are rebuilt with relu=False."""

    def __init__(self, class_num, pretrained=True, relu=True):
        super().__init__()
        weights = models.DenseNet121_Weights.IMAGENET1K_V1 if pretrained else None
        self.model = load_backbone(models.densenet121, weights)
        self.model.classifier = nn.Identity()
        self.relu = relu
        self.classifier = ClassBlock(1024, class_num)

    def forward(self, x):
        x = self.model.features(x)
        if self.relu:
            x = F.relu(x)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class verif_net(nn.Module):
    """Same/different classifier on the element-wise product of two normalised descriptors
    (the "square layer", x * y). Output index 1 means same person, 0 different."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Sequential(nn.Dropout(p=0.75), nn.Linear(FEATURE_DIM, 2))
        self.classifier.apply(init_classifier)

    def forward(self, f1, f2):
        return self.classifier(f1 * f2)


def head_weights(verif):
    """(w, b) of the head's same-minus-different logit, f1 . (w * f2) + b (verification.py)."""
    linear = verif.classifier[1]
    return (linear.weight[SAME] - linear.weight[DIFFERENT]).detach().cpu().numpy(), \
        float((linear.bias[SAME] - linear.bias[DIFFERENT]).detach())


def load_verif(folder, which_epoch="last", fix="choose another --which_epoch, or retrain"):
    """The verification head saved with net_<which_epoch>.pth, on the CPU, or None where the run has
    none (runs of the original code, which saved only the network); a bad file exits saying `fix`."""
    path = head_path(folder, which_epoch)
    if not os.path.isfile(path):
        return None
    verif = verif_net()
    try:
        verif.load_state_dict(load_file(path, fix))
    except (RuntimeError, TypeError) as e:
        raise UserError(f"{path} is not the state of a verification head ({str(e).splitlines()[0][:200]}); "
                        f"{fix}") from None
    return verif


def load_head(folder, which_epoch="last"):
    """(w, b) of the verification head saved with net_<which_epoch>.pth, or None where the run has none."""
    verif = load_verif(folder, which_epoch)
    return None if verif is None else head_weights(verif)


class VerificationTriplets(Dataset):
    """The original's training items (--sampler triplet): an anchor from `anchors` with a positive
    (another image of its identity) and a negative (an image of another identity) drawn at random
    from `pool` (the training images), so that val anchors are compared with training images.
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


def in_batch_pairs(labels):
    """For each image of a P x K batch (--sampler pk), a random other image of the same identity
    (itself when it has none) and a random image of another identity, as batch indices."""
    same = labels[:, None] == labels[None, :]
    others = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    noise = torch.rand(same.shape, device=labels.device)
    positive = torch.where(others, noise, -1.0).argmax(1)
    positive = torch.where(others.any(1), positive, torch.arange(len(labels), device=labels.device))
    negative = torch.where(~same, noise, -1.0).argmax(1)
    return positive, negative


# the logit of a class that does not compete: far below any other, and finite in fp16
RIVALLESS = -1e4


class Verification(nn.Module):
    """The identity network and the verification head as one module (one DistributedDataParallel
    unit). A batch is (anchor, label, positive, negative) images as the original loads them
    (--sampler triplet: three forward passes), or (images, label) of P identities x K images
    (--sampler pk: one pass, each image's pairs drawn from the batch by in_batch_pairs).
    Returns identity logits, labels, and the verification scores of (anchor, positive) and
    (anchor, negative)."""

    def __init__(self, model, verif):
        super().__init__()
        self.model, self.verif = model, verif
        # adapt.py: a tensor of one value per class (its camera); a class's identity loss is then contested
        # only by the classes of the same value. None: by all of them, as the paper
        self.rivals = None

    def forward(self, batch):
        if len(batch) == 4:
            anchor, label, positive, negative = batch
            logits, f = self.model(anchor)
            _, f_pos = self.model(positive)
            _, f_neg = self.model(negative)
        else:
            images, label = batch
            logits, f = self.model(images)
            positive, negative = in_batch_pairs(label)
            f_pos, f_neg = f[positive], f[negative]
        if self.rivals is not None:
            logits = logits.masked_fill(self.rivals[label][:, None] != self.rivals[None, :], RIVALLESS)
        return logits, label, self.verif(f, f_pos), self.verif(f, f_neg)


def objective(logits, label, pos_score, neg_score, alpha, label_smoothing=0.0):
    """The paper's loss in its two parts, (loss_id, loss_verif); the loss is their sum.
    loss_verif carries alpha, as the verification loss the original code prints. label_smoothing
    (not in the paper) moves that share of the identity target onto all identities evenly."""
    loss_id = F.cross_entropy(logits, label, label_smoothing=label_smoothing)
    same = torch.full_like(label, SAME)
    different = torch.full_like(label, DIFFERENT)
    loss_verif = alpha * 0.5 * (F.cross_entropy(pos_score, same) + F.cross_entropy(neg_score, different))
    return loss_id, loss_verif


class Descriptor(nn.Module):
    """The test-time descriptor of a batch of (ImageNet-normalised) images, N x 512, L2-normalised:
    the normalised bottleneck features of each image and of its horizontal flip, summed, normalised
    again; the image and its flip go through the network in one batch. With flip=False, the image's
    normalised feature alone (one pass, half the compute). Used by test.py and export.py alike."""

    def __init__(self, net, flip=True):
        super().__init__()
        self.net = net
        self.flip = flip

    def forward(self, images):
        if not self.flip:
            return self.net(images)[1].float()
        n = images.shape[0]
        # under autocast the features come back in bf16 or fp16; sum and normalise them in fp32
        f = self.net(torch.cat([images, images.flip(3)]))[1].float()
        return F.normalize(f[:n] + f[n:], p=2, dim=1)


# CPU convolutions run fastest on so many input pixels at a time (the activations stay in cache, and
# each layer's fixed cost is shared): the images of a forward pass, before their flips join them. 4
# images at 256 x 128 (M0); 64 at 64 x 32 and 256 at 32 x 16, 2.0 and 4.5 times as fast as 4 (M12)
CPU_MICRO_PIXELS = 4 * 256 * 128


def describe(descriptor, images, device):
    """The descriptors of a batch of images, channels-last, CPU_MICRO_PIXELS at a time on a CPU."""
    images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    per_pass = max(1, CPU_MICRO_PIXELS // (images.shape[-2] * images.shape[-1]))
    chunks = images.split(per_pass) if device.type == "cpu" else [images]
    return torch.cat([descriptor(chunk) for chunk in chunks])


@torch.inference_mode()
def descriptors(model, loader, device, desc="", precision="fp32"):
    """The Descriptor of every image of `loader` (batches of (images, anything)), as float32 numpy.
    Images go through the network channels-last; bf16 and fp16 through autocast. The model's own
    memory format is left as it is."""
    model.eval()
    descriptor = Descriptor(model)
    features = []
    for images, _ in tqdm(loader, desc=desc, unit="batch", leave=False):
        with autocast(device, precision):
            features.append(describe(descriptor, images, device).cpu())
    return torch.cat(features).numpy().astype(np.float32)


def check_precision(arithmetic, model, dataset, what, shard=None):
    """devices.Arithmetic.check on the first images of `dataset` (first_images), described by the
    network in eval mode as descriptors() describes them (the same batches through the same
    kernels); the network's mode is left as it was. Returns the precision to run in. In fp32 it
    reads no image."""
    if not arithmetic.reduced:
        return arithmetic.precision
    images = first_images(dataset)
    training = model.training
    model.eval()
    try:
        descriptor = Descriptor(model)
        return arithmetic.check(lambda x: describe(descriptor, x, arithmetic.device), images, what, shard)
    finally:
        model.train(training)


def first_images(dataset, n=CHECK_IMAGES):
    """The first n images of a dataset of (image, ...) items, as one batch: what check_precision
    checks reduced precision on."""
    return torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))])


def build_model(opts, pretrained=False):
    """The identity network described by a run's options (opts.yaml)."""
    if opts.get("use_dense"):
        return ft_net_dense(int(opts["nclasses"]), pretrained=pretrained, relu=not opts.get("original"))
    return ft_net(int(opts["nclasses"]), pretrained=pretrained, stride=int(opts.get("stride") or 2))


# The ImageNet classifier that the original code's networks keep in their checkpoints and never use
ORIGINAL_UNUSED = {False: ("model.fc.weight", "model.fc.bias"),                 # ResNet-50
                   True: ("model.classifier.weight", "model.classifier.bias")}  # DenseNet-121 (use_dense)
# the identity classifier's keys in a network's state_dict start so (ClassBlock.classifier); the
# rest (backbone, bottleneck) describes images whoever the identities are
IDENTITY_CLASSIFIER = "classifier.classifier."
CLASSIFIER_WEIGHT = IDENTITY_CLASSIFIER + "1.weight"


def adopt_original(opts, state):
    """The options and checkpoint of a run of the original code as build_model and load_state_dict
    take them: the number of classes read from its identity classifier, its unused ImageNet
    classifier left out (no other key: any other difference still stops the load)."""
    unused = ORIGINAL_UNUSED[bool(opts["use_dense"])]
    state = {k: v for k, v in state.items() if k not in unused}
    weight = state.get(CLASSIFIER_WEIGHT)
    # without that weight no number of classes fits, and the load stops naming the missing key
    nclasses = weight.shape[0] if isinstance(weight, torch.Tensor) and weight.dim() else 1
    return dict(opts, nclasses=nclasses), state


def load_trained(folder, which_epoch="last"):
    """(network, options) of a trained run: rebuilt from folder/opts.yaml alone and loaded with
    net_<which_epoch>.pth, on the CPU; exits with one line when the two do not fit. A run of the
    original code loads as its train.py left it (runs.load_opts, adopt_original)."""
    opts = load_opts(folder)
    if opts.get("PCB"):
        raise UserError(f"{folder}/opts.yaml is a run of the original code trained with --PCB (its part-based "
                        f"model), which this repository does not build; test it with the original's test.py")
    state = load_checkpoint(folder, which_epoch)
    if opts.get("original") and isinstance(state, dict):
        opts, state = adopt_original(opts, state)
    net = build_model(opts)
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError) as e:  # TypeError: a file that holds no state_dict at all
        # torch's message: a header line, then one line per mismatch; the first mismatch says enough
        details = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
        raise UserError(f"net_{which_epoch}.pth does not fit the network of {folder}/opts.yaml "
                        f"({(details or [str(e)])[0][:300]}); was it trained with other options?") from None
    return net, opts
