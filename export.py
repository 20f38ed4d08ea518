"""Stage 5: export a trained run's feature extractor for a service, as an ONNX model.
The network is rebuilt from model/<name>/opts.yaml and its checkpoint, as test.py does.

The graph takes `images`: float32 N x 3 x H x W, RGB in [0, 1], at the run's height x width
(opts.yaml). Resize each image to H x W with bicubic interpolation, as test.py does
(data.test_transform), and divide by 255; the ImageNet normalisation is inside the graph.
N (the batch) is dynamic. It returns `features`: N x 512 float32, L2-normalised, so the
dot product of two rows is their cosine similarity. By default they are test.py's descriptors
(image and horizontal flip in one pass, summed, normalised again); --no-flip exports the
image's feature alone, for services that want half the compute.

The file is written to a temporary name, run with onnxruntime on random images against
PyTorch (the largest difference is printed), and renamed only if they agree.
"""
import argparse
import importlib.util
import os

import numpy as np
import torch
import torch.nn as nn

from model import Descriptor, load_trained
from reid import cli
from reid.cli import UserError
from reid.data import IMAGENET_MEAN, IMAGENET_STD
from reid.runs import atomic_path, run_dir

# the exporter (torch.onnx.export with dynamo=True) needs these; onnxruntime only checks the result
EXPORT_PACKAGES = ("onnx", "onnxscript")
# the operator set PyTorch's exporter is written in: it cannot convert a model to an older one
MIN_OPSET = 18
# largest difference allowed between the ONNX features and PyTorch's (both unit vectors)
TOLERANCE = 1e-4
# torch.export treats a dimension of size 1 as a constant, so the example batch has 2 images;
# the check uses another size to exercise the dynamic batch
EXPORT_BATCH, CHECK_BATCH = 2, 3


def parse_args(argv=None):
    p = cli.parser(__doc__)
    cli.add_run_flags(p, "to export")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="file format of the exported model")
    p.add_argument("--output", default=None,
                   help="where to write it (default model/<name>/<name>.onnx, or <name>_noflip.onnx with --no-flip)")
    p.add_argument("--flip", default=True, action=argparse.BooleanOptionalAction,
                   help="average each image's feature with its horizontal flip's inside the graph, as test.py "
                        "does (--no-flip: the image alone, half the compute)")
    p.add_argument("--opset", default=20, type=int,
                   help=f"ONNX operator set version to write, {MIN_OPSET} or newer (lower it for an older runtime)")
    return p.parse_args(argv)


class ServiceModel(nn.Module):
    """What the exported graph computes: ImageNet normalisation of [0, 1] RGB images, then the
    descriptor, so that a service only resizes and scales its images."""

    def __init__(self, descriptor):
        super().__init__()
        self.descriptor = descriptor
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images):
        return self.descriptor((images - self.mean) / self.std)


def export_onnx(module, height, width, path, opset):
    example = torch.rand(EXPORT_BATCH, 3, height, width)
    # external_data=False: weights inside the one file (ResNet-50 is far below ONNX's 2 GB limit)
    torch.onnx.export(module, (example,), path, dynamo=True, input_names=["images"], output_names=["features"],
                      dynamic_shapes={"images": {0: "batch"}}, opset_version=opset, external_data=False,
                      verbose=False)


def largest_difference(module, height, width, path):
    """Largest absolute difference between the ONNX file's features (onnxruntime) and PyTorch's
    on random images, or None when onnxruntime is not installed."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime  # here, not at the top: exporting works without it

    images = torch.rand(CHECK_BATCH, 3, height, width, generator=torch.Generator().manual_seed(0))
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(["features"], {"images": images.numpy()})[0]
    with torch.inference_mode():
        expected = module(images).numpy()
    return float(np.abs(got - expected).max())


def main(argv=None):
    args = parse_args(argv)
    folder = run_dir(args.name)
    output = args.output or os.path.join(folder, args.name + ("" if args.flip else "_noflip") + ".onnx")
    if args.opset < MIN_OPSET:
        raise UserError(f"--opset {args.opset} is older than the exporter can write; use {MIN_OPSET} or newer")
    missing = [p for p in EXPORT_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise UserError(f"--format onnx needs the package(s) {', '.join(missing)}: pip install {' '.join(missing)} "
                        f"(the tested versions are pinned in requirements.txt)")

    net, opts = load_trained(folder, args.which_epoch)
    module = ServiceModel(Descriptor(net, flip=args.flip)).eval()
    height, width = int(opts["height"]), int(opts["width"])

    with atomic_path(output) as tmp:
        export_onnx(module, height, width, tmp, args.opset)
        difference = largest_difference(module, height, width, tmp)
        if difference is not None and not difference <= TOLERANCE:  # written so that NaN fails too
            raise UserError(f"the exported model's features differ from PyTorch's by up to {difference:.2e} "
                            f"(more than {TOLERANCE:g}); {output} not written. Try another --opset")
    print(f"wrote {os.path.abspath(output)}: images N x 3 x {height} x {width} RGB in [0, 1] -> features N x 512, "
          f"{'image and flip' if args.flip else 'no flip'}, net_{args.which_epoch}.pth")
    if difference is None:
        print("note: onnxruntime is not installed, so the file was not checked against PyTorch "
              "(pip install onnxruntime)")
    else:
        print(f"onnxruntime vs PyTorch on {CHECK_BATCH} random images: largest difference {difference:.1e}")


if __name__ == "__main__":
    cli.run_main(main)
