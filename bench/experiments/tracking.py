"""How well search.py links footage's boxes into tracklets, by the MOT metrics of py-motmetrics
against each footage's ground truth: IDF1 (the share of boxes given their person's one id), ID
switches, MOTA, and how many tracks for how many people.

Footage: the demo's synthetic footage (synthetic_footage.py --seed 0, both cameras, written into a
temporary folder; its det/det.txt holds its people's boxes without ids) and the MOTChallenge
sequences of --sequences (default: ../shared/data/footage/TUD-Campus, with its public detections).
Linking (footage.link_tracklets, which search.py calls for boxes without ids):
    overlap          IoU with the tracklet's box of the frame before, the highest first (search.py's)
    motion           IoU with where the tracklet's person is predicted to be (constant velocity), by
                     the assignment of the highest total IoU (the Hungarian algorithm), as SORT links
    motion, gap 10   the same, a tracklet kept open across 10 frames unseen instead of 3
A box counts as found where it overlaps a true one by IoU 0.5 or more, as in the MOTChallenge
benchmark.

    python bench/experiments/tracking.py
    python bench/experiments/tracking.py --sequences path/to/MOT17-09 path/to/TUD-Stadtmitte
"""
import os
import tempfile

import numpy as np

from bench.stages import machine
from reid import cli
from reid.search import footage as fo
from reid.synthetic import footage as synthetic_footage

if not hasattr(np, "asfarray"):
    # motmetrics 1.4.0, the latest release, still calls np.asfarray, which numpy 2 removed
    np.asfarray = lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)
import motmetrics  # noqa: E402  after the shim above

METRICS = ["idf1", "num_switches", "mota", "num_unique_objects"]
LINKINGS = {"overlap": {}, "motion": {"motion": True}, "motion, gap 10": {"motion": True, "max_gap": 10}}


def mot_scores(truth, tracklets):
    """{idf1, num_switches, mota, num_unique_objects, tracks} of `tracklets` (footage.Tracklet)
    against `truth` (footage.Box with ids), frame by frame, matched at IoU 0.5."""
    accumulator = motmetrics.MOTAccumulator(auto_id=False)
    true_boxes, found = {}, {}
    for box in truth:
        true_boxes.setdefault(box.frame, []).append(box)
    for t in tracklets:
        for box in t.boxes:
            found.setdefault(box.frame, []).append((t.id, box))
    for frame in sorted(set(true_boxes) | set(found)):
        people, tracked = true_boxes.get(frame, []), found.get(frame, [])
        distances = motmetrics.distances.iou_matrix([[b.left, b.top, b.width, b.height] for b in people],
                                                    [[b.left, b.top, b.width, b.height] for _, b in tracked],
                                                    max_iou=0.5)
        accumulator.update([b.id for b in people], [track for track, _ in tracked], distances, frameid=frame)
    summary = motmetrics.metrics.create().compute(accumulator, metrics=METRICS)
    return {**{k: float(summary[k].iloc[0]) for k in METRICS}, "tracks": len(tracklets)}


def sequence_scores(sequence, **linking):
    """mot_scores of the sequence's det/det.txt linked (footage.link_tracklets with `linking`),
    against its gt/gt.txt."""
    footage = fo.open_footage(sequence)
    truth, _ = fo.read_detections(os.path.join(sequence, fo.GROUND_TRUTH), footage, ground_truth=True)
    boxes, _ = fo.read_detections(os.path.join(sequence, fo.DETECTIONS), footage)
    boxes = [box._replace(id=-1) for box in boxes]  # linked as search.py links boxes without ids
    return mot_scores(truth, fo.link_tracklets(boxes, footage.fps, **linking))


def main():
    p = cli.parser(__doc__)
    p.add_argument("--sequences", nargs="*", default=["../shared/data/footage/TUD-Campus"],
                   help="MOTChallenge sequence folders with det/det.txt and gt/gt.txt")
    args = p.parse_args()
    print(f"{machine()}; motmetrics {motmetrics.__version__}")
    print(f"{'footage':<22} {'linking':<15} {'IDF1':>6} {'ID sw.':>6} {'MOTA':>6} {'tracks':>6} {'people':>6}")
    with tempfile.TemporaryDirectory() as work:
        made = synthetic_footage.make_footage(work, seed=0, video=False)
        sequences = [(f"demo footage {c['name']}", os.path.join(work, c["sequence"])) for c in made["cameras"]]
        sequences += [(os.path.basename(os.path.normpath(s)), s) for s in args.sequences]
        for name, sequence in sequences:
            for linking, options in LINKINGS.items():
                s = sequence_scores(sequence, **options)
                print(f"{name:<22} {linking:<15} {s['idf1']:6.3f} {s['num_switches']:6.0f} {s['mota']:6.3f} "
                      f"{s['tracks']:6d} {s['num_unique_objects']:6.0f}", flush=True)


if __name__ == "__main__":
    main()
