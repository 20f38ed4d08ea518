"""Random Erasing (Zhong et al., "Random Erasing Data Augmentation", AAAI 2020),
as used by the original training code.

With probability `probability`, a rectangle of area in [sl, sh] x image area and
aspect ratio in [r1, 1/r1] (both drawn uniformly, up to 100 tries until it fits)
is filled with `mean`. torchvision.transforms.RandomErasing draws the aspect ratio
log-uniformly and tries 10 times, so it is not the same augmentation.
Random numbers come from torch, so DataLoader workers seeded by PyTorch repeat runs.
"""
import math

import torch


class RandomErasing:
    def __init__(self, probability=0.5, sl=0.02, sh=0.4, r1=0.3, mean=(0.4914, 0.4822, 0.4465)):
        self.probability = probability
        self.sl, self.sh, self.r1 = sl, sh, r1
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img):
        """img: a C x H x W tensor (after ToTensor/Normalize); returned erased in place or untouched."""
        if torch.rand(1).item() >= self.probability:
            return img
        _, height, width = img.shape
        area = height * width
        for _ in range(100):
            target_area = torch.empty(1).uniform_(self.sl, self.sh).item() * area
            aspect_ratio = torch.empty(1).uniform_(self.r1, 1 / self.r1).item()
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < width and h < height:
                top = int(torch.randint(0, height - h + 1, (1,)))
                left = int(torch.randint(0, width - w + 1, (1,)))
                img[:, top:top + h, left:left + w] = self.mean[: img.shape[0]].to(img.dtype)
                return img
        return img

    def __repr__(self):
        return f"RandomErasing(probability={self.probability}, sl={self.sl}, sh={self.sh}, r1={self.r1})"
