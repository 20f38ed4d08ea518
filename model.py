"""The networks of "A Discriminatively Learned CNN Embedding for Person
Re-identification": an ImageNet backbone, a 512-d bottleneck whose
L2-normalised output is the descriptor, an identity classifier on it, and a
verification head that classifies a pair from the product of two descriptors.
build_model() is the only place that turns saved options into a network.
"""
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import models
from tqdm import tqdm

from runs import load_checkpoint, load_opts

FEATURE_DIM = 512


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
        sys.exit(f"error: cannot load the ImageNet weights {weights.url.rsplit('/', 1)[-1]} ({e}); "
                 f"pass --no-pretrained to train from scratch, or place that file in {folder} "
                 f"(set TORCH_HOME to use another folder)")


class ft_net(nn.Module):
    """ResNet-50 with global average pooling (2048-d) and the bottleneck block."""

    def __init__(self, class_num, pretrained=True):
        super().__init__()
        weights = models.ResNet50_Weights.IMAGENET1K_V1 if pretrained else None
        self.model = load_backbone(models.resnet50, weights)
        self.model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.model.fc = nn.Identity()
        self.classifier = ClassBlock(2048, class_num)

    def forward(self, x):
        return self.classifier(self.model(x))


class ft_net_dense(nn.Module):
    """DenseNet-121 with global average pooling (1024-d) and the bottleneck block."""

    def __init__(self, class_num, pretrained=True):
        super().__init__()
        weights = models.DenseNet121_Weights.IMAGENET1K_V1 if pretrained else None
        self.model = load_backbone(models.densenet121, weights)
        self.model.classifier = nn.Identity()
        self.classifier = ClassBlock(1024, class_num)

    def forward(self, x):
        return self.classifier(self.model(x))


class verif_net(nn.Module):
    """Same/different classifier on the element-wise product of two normalised descriptors
    (the "square layer", x * y). Output index 1 means same person, 0 different."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Sequential(nn.Dropout(p=0.75), nn.Linear(FEATURE_DIM, 2))
        self.classifier.apply(init_classifier)

    def forward(self, f1, f2):
        return self.classifier(f1 * f2)


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


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# CPU convolutions run fastest a few images at a time (the activations stay in cache):
# CPU_MICRO_BATCH // 2 images and their flips per forward pass
CPU_MICRO_BATCH = 8


@torch.inference_mode()
def descriptors(model, loader, device, desc="", precision="fp32"):
    """The Descriptor of every image of `loader` (batches of (images, anything)), as float32 numpy.
    Images go through the network channels-last; bf16 and fp16 through autocast. The model's own
    memory format is left as it is."""
    model.eval()
    descriptor = Descriptor(model)
    features = []
    for images, _ in tqdm(loader, desc=desc, unit="batch", leave=False):
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        chunks = images.split(CPU_MICRO_BATCH // 2) if device.type == "cpu" else [images]
        with torch.autocast(device.type, dtype=PRECISIONS[precision], enabled=precision != "fp32"):
            features.append(torch.cat([descriptor(chunk) for chunk in chunks]).cpu())
    return torch.cat(features).numpy().astype(np.float32)


def build_model(opts, pretrained=False):
    """The identity network described by a run's options (opts.yaml)."""
    net = ft_net_dense if opts.get("use_dense") else ft_net
    return net(int(opts["nclasses"]), pretrained=pretrained)


def load_trained(folder, which_epoch="last"):
    """(network, options) of a trained run: rebuilt from folder/opts.yaml alone and loaded with
    net_<which_epoch>.pth, on the CPU; exits with one line when the two do not fit."""
    opts = load_opts(folder)
    net = build_model(opts)
    try:
        net.load_state_dict(load_checkpoint(folder, which_epoch))
    except RuntimeError as e:
        # torch's message: a header line, then one line per mismatch; the first mismatch says enough
        details = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
        sys.exit(f"error: net_{which_epoch}.pth does not fit the network of {folder}/opts.yaml "
                 f"({(details or [str(e)])[0][:300]}); was it trained with other options?")
    return net, opts
