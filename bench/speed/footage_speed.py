"""Speed of a footage search, end to end, against the floor of its parts measured in the same run.

Synthetic footage (synthetic_footage.py: --cameras videos of --frames frames at --width x
--height) is searched for one person by search.py, as a user runs it: decode, crops of the
boxes of its det.txt, descriptors, linking into tracklets, ranking, results (--no-pictures). The
parts alone, in this process: decoding the videos alone (every frame to RGB), and the network
alone on the same crops, already cut and held in memory. The floor is their sum; end to end /
floor says what the rest costs (process start, loading the run, reading detections, cropping,
linking, cache and results). A second search of the same footage takes its descriptors from the
cache and extracts the query only.

The run is a network with random weights at --height_in x --width_in (speed does not depend on
what it learned), so nothing needs training first.

    python bench/speed/footage_speed.py
    python bench/speed/footage_speed.py --frames 600 --width 640 --height 480
"""
import os
import sys
import tempfile
import time

import torch

from bench.stages import machine, run_stage
from model import build_model, descriptors
from reid import cli
from reid.data import test_transform
from reid.devices import choose_device
from reid.runs import save_checkpoint, save_opts
from reid.search import footage as fo
from reid.synthetic import footage as synthetic_footage


def main():
    p = cli.parser(__doc__)
    p.add_argument("--cameras", default=2, type=int, help="videos searched")
    p.add_argument("--frames", default=300, type=int, help="frames per video")
    p.add_argument("--width", default=640, type=int, help="frame width")
    p.add_argument("--height", default=480, type=int, help="frame height")
    p.add_argument("--people", default=8, type=int, help="people walking past the cameras")
    p.add_argument("--height_in", default=64, type=int, help="the run's input height")
    p.add_argument("--width_in", default=32, type=int, help="the run's input width")
    p.add_argument("--batchsize", default=64, type=int, help="crops per forward pass")
    p.add_argument("--gpu_ids", default="0" if torch.cuda.is_available() else "-1", help="device of the network")
    args = p.parse_args()
    print(machine() + (f"; network on {torch.cuda.get_device_name(0)}" if args.gpu_ids != "-1" else ""))

    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        root = os.path.join(work, "footage")
        manifest = synthetic_footage.make_footage(root, cameras=args.cameras, frames=args.frames, width=args.width,
                                                  height=args.height, people=args.people, fps=25)
        videos = [os.path.join(root, c["video"]) for c in manifest["cameras"]]
        detections = [os.path.join(root, c["sequence"], fo.DETECTIONS) for c in manifest["cameras"]]
        frames = args.cameras * args.frames
        print(f"footage: {args.cameras} videos of {args.frames} frames, {args.width} x {args.height} "
              f"(made in {time.perf_counter() - start:.0f} s)")
        opts = {"nclasses": 100, "height": args.height_in, "width": args.width_in, "use_dense": False}
        save_opts(os.path.join(work, "model", "bench"), opts)
        save_checkpoint(os.path.join(work, "model", "bench", "net_last.pth"), build_model(opts).state_dict())

        start = time.perf_counter()
        for video in videos:
            for _ in fo.frames(fo.open_footage(video)):
                pass
        decode = time.perf_counter() - start
        footage_boxes = [(fo.open_footage(v), fo.read_detections(d, fo.open_footage(v))[0])
                         for v, d in zip(videos, detections)]
        crops = [crop for f, boxes in footage_boxes for _, crop in fo.crop_boxes(f, boxes)]
        device = choose_device(args.gpu_ids)
        model = build_model(opts).to(device, memory_format=torch.channels_last).eval()
        transform = test_transform(args.height_in, args.width_in)
        batches = [(torch.stack([transform(c) for c in crops[i:i + args.batchsize]]), None)
                   for i in range(0, len(crops), args.batchsize)]
        start = time.perf_counter()
        descriptors(model, batches, device)
        network = time.perf_counter() - start
        print(f"decode alone: {decode:.2f} s ({frames / decode:.0f} frames/s); network alone on the "
              f"{len(crops)} crops: {network:.2f} s ({len(crops) / network:.0f} crops/s); "
              f"floor {decode + network:.2f} s")

        query = os.path.join(root, manifest["people"][0]["query"])
        search = ["search.py", "--name", "bench", "--query", query, "--gallery", *videos, "--detections", *detections,
                  "--gpu_ids", args.gpu_ids, "--threshold", "0.5", "--no-pictures", "--batchsize", str(args.batchsize)]
        times = []
        for _ in range(2):
            start = time.perf_counter()
            run_stage(*search, cwd=work)
            times.append(time.perf_counter() - start)
    floor = decode + network
    print(f"end to end, first search: {times[0]:.2f} s ({frames / times[0]:.0f} frames/s), "
          f"{times[0] / floor:.2f} x the floor (+{times[0] - floor:.2f} s)")
    print(f"second search (descriptors from the cache): {times[1]:.2f} s, {times[1] / times[0]:.3f} of the first")


if __name__ == "__main__":
    sys.exit(main())
