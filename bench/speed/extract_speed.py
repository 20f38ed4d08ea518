"""Feature-extraction speed of test.py against the original's way, and what reduced
precision does to the results.

Speed: the same ResNet-50 network (ft_net, 256 x 128 input) and the same images,
decoded by the same DataLoader, in the same run:
    original   float32, channels-first, the image and its flip in two forward passes
    this repo  model.descriptors: channels-last, image and flip in one pass, at
               --precision fp32, bf16 and fp16 (autocast)
The GPU is used when CUDA is available, the CPU otherwise.
Accuracy: a trained run's query and gallery features at fp32 and at bf16, evaluated
by the protocol; needs the demo run (bash demo.sh) or --name/--test_dir of another.
With --passes instead: on a CPU, the seconds to describe 256 random images (and their flips)
at 32 x 16, 64 x 32 and 256 x 128 with 4, 16, 64 or 256 images per forward pass, and with
model.CPU_MICRO_PIXELS's choice, 2 rounds each: what chose it.

    python bench/speed/extract_speed.py
    python bench/speed/extract_speed.py --passes
"""
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, Subset

import model
from model import Descriptor, describe, descriptors, ft_net, load_trained
from reid import cli
from reid.data import image_folder, parse_names, test_transform
from reid.evaluation.metrics import Side, rank_queries, summarize
from reid.runs import run_dir


@torch.no_grad()
def original_way(model, loader, device):
    """As the original test.py: float32, channels-first, a second forward pass for the flip."""
    model.eval()
    out = []
    for images, _ in loader:
        images = images.to(device)
        f = model(images)[1] + model(torch.flip(images, dims=[3]))[1]
        out.append(torch.nn.functional.normalize(f, dim=1).cpu())  # .cpu() waits for a GPU to finish
    return torch.cat(out)


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.inference_mode()
def pass_sizes():
    """Seconds to describe 256 random images per input size and images per forward pass."""
    torch.manual_seed(0)
    network = ft_net(751, pretrained=False).eval().to(memory_format=torch.channels_last)
    descriptor, cpu = Descriptor(network), torch.device("cpu")
    chosen = model.CPU_MICRO_PIXELS
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}: seconds to describe 256 images "
          f"(and their flips), 2 rounds")
    for height, width in ((32, 16), (64, 32), (256, 128)):
        images = torch.randn(256, 3, height, width)
        for per_pass in (4, 16, 64, 256, None):
            model.CPU_MICRO_PIXELS = chosen if per_pass is None else per_pass * height * width
            describe(descriptor, images[:8], cpu)  # warm-up
            rounds = [timed(lambda images=images: describe(descriptor, images, cpu)) for _ in range(2)]
            what = (f"{per_pass} a pass" if per_pass else
                    f"CPU_MICRO_PIXELS ({max(1, chosen // (height * width))} a pass)")
            print(f"  {height:>3} x {width:<3} {what:<32} " + "  ".join(f"{t:6.2f}" for t in rounds), flush=True)
    model.CPU_MICRO_PIXELS = chosen


def main():
    p = cli.parser(__doc__)
    p.add_argument("--test_dir", default="demo_data/Market-1501-synthetic/pytorch",
                   help="prepared tree to read images from")
    p.add_argument("--name", default="demo", help="trained run whose features are compared at fp32 and bf16")
    p.add_argument("--images", type=int, default=256, help="images timed per way")
    p.add_argument("--batchsize", type=int, default=64, help="images per DataLoader batch")
    p.add_argument("--num_workers", type=int, default=2, help="DataLoader workers")
    p.add_argument("--passes", action="store_true",
                   help="time only the images per forward pass on the CPU (random images and weights)")
    args = p.parse_args()
    if args.passes:
        pass_sizes()
        return
    if not os.path.isdir(args.test_dir):
        sys.exit(f"error: {args.test_dir} not found; run bash demo.sh first, or pass --test_dir and --name")

    gallery = image_folder(args.test_dir, "gallery", "--test_dir", test_transform(256, 128))
    images = Subset(gallery, range(min(args.images, len(gallery))))
    loader = DataLoader(images, batch_size=args.batchsize, num_workers=args.num_workers)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = ft_net(751, pretrained=False).eval().to(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{len(images)} images at 256 x 128, ResNet-50 (ft_net), batch {args.batchsize}, "
          f"{where}, torch {torch.__version__}")

    original_way(model, DataLoader(Subset(images, range(8)), batch_size=8), device)  # warm-up
    base = len(images) / timed(lambda: original_way(model, loader, device))
    print(f"  original (fp32, channels-first, 2 passes)  {base:6.1f} images/s")
    reference = descriptors(model, loader, device)
    channels_last = model.to(memory_format=torch.channels_last)
    for precision in ("fp32", "bf16", "fp16"):
        descriptors(channels_last, DataLoader(Subset(images, range(8)), batch_size=8), device, precision=precision)
        speed = len(images) / timed(lambda precision=precision: descriptors(channels_last, loader, device,
                                                                            precision=precision))
        f = descriptors(channels_last, loader, device, precision=precision)
        drift = float((torch.from_numpy(f) - torch.from_numpy(reference)).norm(dim=1).max())
        print(f"  this repo, {precision}                      {speed:6.1f} images/s  {speed / base:4.2f}x   "
              f"largest feature change vs fp32 {drift:.1e}")

    folder = run_dir(args.name)
    if not os.path.isfile(os.path.join(folder, "opts.yaml")):
        print(f"(no {folder}/opts.yaml: run bash demo.sh to compare the accuracy of fp32 and bf16 features)")
        return
    trained, opts = load_trained(folder)
    trained = trained.to(device, memory_format=torch.channels_last)
    transform = test_transform(opts["height"], opts["width"])
    splits = {s: image_folder(args.test_dir, s, "--test_dir", transform) for s in ("query", "gallery")}
    for precision in ("fp32", "bf16"):
        query, gallery = (Side(descriptors(trained, DataLoader(d, batch_size=args.batchsize,
                                                               num_workers=args.num_workers), device,
                                           precision=precision),
                               *parse_names([path for path, _ in d.samples])) for d in splits.values())
        r = summarize(rank_queries(query, gallery))
        print(f"  {args.name} run, {precision} features: Rank@1 {r['Rank@1']:.4f} mAP {r['mAP']:.4f}")


if __name__ == "__main__":
    main()
