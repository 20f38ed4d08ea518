"""search.py on a large gallery: the first search (every gallery image extracted) against a
second one (the gallery's descriptors from the cache), and the floor a cached search is held
to: a process that loads the run, extracts only the queries and scores them against the
gallery's descriptors with one matrix product.

The gallery is --gallery_size images (20,000 by default): the images of a synthetic.py tree
(drawn once into the temporary folder), hard-linked again and again under numbered folders.
The run is a ResNet-50 with random weights saved as a run folder would be (speed does not
depend on training), at --height x --width. Each search is a fresh `python search.py`
process, timed from spawn to exit: the first, a second with the gallery cached, and a third
cached without the pictures (search.py --no-pictures).

    python bench/speed/search_speed.py                      # 20,000 images at 64 x 32, 4 queries
    python bench/speed/search_speed.py --height 256 --width 128 --gallery_size 2000
"""
import os
import tempfile
import time

import torch

from bench.stages import machine, run_stage
from model import build_model
from reid import cli
from reid.data import is_image
from reid.runs import SEARCH_CACHE, save_checkpoint, save_opts
from reid.synthetic import people as synthetic

# Run in a process of its own: what a cached search cannot do without (argv: run name, gallery
# cache file, the queries' folder, --gpu_ids).
FLOOR = r'''
import sys, time
start = time.perf_counter()
import numpy as np, torch
from model import load_trained
from reid.devices import choose_device, loader_workers
from reid.runs import run_dir
from reid.search import gallery
device = choose_device(sys.argv[4])
folder = run_dir(sys.argv[1])
model, opts = load_trained(folder)
model = model.to(device, memory_format=torch.channels_last).eval()
with np.load(sys.argv[2]) as cache:
    gf = cache["features"]
# as search.py describes its queries with its default flags
describer = gallery.Describer(model, device, folder, "last", gallery.input_size(opts), "fp32", 64,
                              loader_workers(None, device))
qf, _ = describer.extract(gallery.list_images(sys.argv[3], "--query"), "queries")
scores = torch.from_numpy(qf) @ torch.from_numpy(gf).T
print(f"{scores.shape[0]} x {scores.shape[1]} scores in {time.perf_counter() - start:.2f} s")
'''


def make_gallery(folder, size, height, width):
    """`size` gallery images under folder/gallery/<k>/ (hard links to a synthetic tree's images)
    and a folder of queries (one image of each of the first test ids)."""
    raw = os.path.join(folder, "raw")
    synthetic.make_market_tree(raw, height=height * 2, width=width * 2)
    images = sorted(os.path.join(d, n) for d, _, names in os.walk(os.path.join(raw, "bounding_box_test"))
                    for n in names if is_image(n))
    for i in range(size):
        target = os.path.join(folder, "gallery", f"{i // len(images):03d}", os.path.basename(images[i % len(images)]))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.link(images[i % len(images)], target)
    return os.path.join(raw, "query")


def main():
    p = cli.parser(__doc__)
    p.add_argument("--gallery_size", default=20000, type=int, help="gallery images")
    p.add_argument("--queries", default=4, type=int, help="query images")
    p.add_argument("--height", default=64, type=int, help="the run's input height")
    p.add_argument("--width", default=32, type=int, help="the run's input width")
    p.add_argument("--gpu_ids", default="0" if torch.cuda.is_available() else "-1", help="device of the searches")
    args = p.parse_args()
    print(machine() + (f"; searches on {torch.cuda.get_device_name(0)}" if args.gpu_ids != "-1" else "")
          + f"; the run's input {args.height} x {args.width}")

    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        queries_from = make_gallery(work, args.gallery_size, args.height, args.width)
        queries = os.path.join(work, "queries")
        os.makedirs(queries)
        for name in sorted(os.listdir(queries_from))[:args.queries]:
            os.link(os.path.join(queries_from, name), os.path.join(queries, name))
        print(f"gallery: {args.gallery_size} images, {args.queries} queries "
              f"(made in {time.perf_counter() - start:.0f} s)")
        opts = {"nclasses": 100, "height": args.height, "width": args.width, "use_dense": False}
        save_opts(os.path.join(work, "model", "bench"), opts)
        save_checkpoint(os.path.join(work, "model", "bench", "net_last.pth"), build_model(opts).state_dict())

        search = ["search.py", "--name", "bench", "--query", queries, "--gallery", os.path.join(work, "gallery"),
                  "--gpu_ids", args.gpu_ids, "--threshold", "0.5"]
        times = {}
        for name, extra in (("first search (gallery extracted)", []), ("second search (gallery cached)", []),
                            ("third search (gallery cached), --no-pictures", ["--no-pictures"])):
            start = time.perf_counter()
            out = run_stage(*search, *extra, cwd=work)
            times[name] = time.perf_counter() - start
            print(f"{name}: {times[name]:.1f} s; "
                  + next(line for line in out.splitlines() if line.startswith("gallery")))
        cache_dir = os.path.join(work, "model", "bench", SEARCH_CACHE)
        cache = os.path.join(cache_dir, os.listdir(cache_dir)[0])
        # in a folder of its own: beside the working folder's model/ (the runs), "import model" would find that
        floor = os.path.join(work, "floor", "floor.py")
        os.makedirs(os.path.dirname(floor))
        with open(floor, "w") as f:
            f.write(FLOOR)
        start = time.perf_counter()
        out = run_stage(floor, "bench", cache, queries, args.gpu_ids, cwd=work)
        floor = time.perf_counter() - start
        print(f"floor (load the run, extract the queries, one matrix product): {floor:.1f} s ({out.strip()})")
    first, second, bare = times.values()
    print(f"cached search / first search = {second / first:.3f}; cached search / floor = {second / floor:.2f} "
          f"(+{second - floor:.2f} s: listing and checking {args.gallery_size} files, "
          f"the cache, results and pictures); without pictures / floor = {bare / floor:.2f} (+{bare - floor:.2f} s)")


if __name__ == "__main__":
    main()
