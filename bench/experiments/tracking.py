"""How well search.py links footage's boxes into tracklets, by the MOT metrics of py-motmetrics
against each footage's ground truth: IDF1 (the share of boxes given their person's one id), ID
switches, MOTA, how many tracks for how many people, and how many tracks hold two people or more
(mixed: their boxes matched to more than one person).

Footage: the demo's synthetic footage (synthetic_footage.py --seed 0, both cameras, written into a
temporary folder; its det/det.txt holds its people's boxes without ids) and the MOTChallenge
sequences of --sequences (default: ../shared/data/footage/TUD-Campus, with its public detections).
Linking (tracking.link_tracklets, which search.py calls for boxes without ids):
    overlap          IoU with the tracklet's box of the frame before, the highest first
    motion           IoU with where the tracklet's person is predicted to be (constant velocity), by
                     the assignment of the highest total IoU (the Hungarian algorithm), as SORT links
    motion, gap 10   the same, a tracklet kept open across 10 frames unseen instead of 3
    motion and appearance   search.py's: motion, and the descriptors of a trained run (--demo_run for
                     the demo's footage, --run for --sequences), at the cosine similarity one pair
                     in 100 of the footage's pairs of different people reaches (tracking.py)
A box counts as found where it overlaps a true one by IoU 0.5 or more, as in the MOTChallenge
benchmark.

    python bench/experiments/tracking.py
    python bench/experiments/tracking.py --run data/real_market/model/recipe_s0
    python bench/experiments/tracking.py --sequences path/to/MOT17-09 path/to/TUD-Stadtmitte
"""
import os
import tempfile

import numpy as np
import torch

from bench.stages import machine
from model import load_trained
from reid import cli
from reid.search import footage as fo
from reid.search import gallery, tracking
from reid.synthetic import footage as synthetic_footage

if not hasattr(np, "asfarray"):
    # motmetrics 1.4.0, the latest release, still calls np.asfarray, which numpy 2 removed
    np.asfarray = lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)
import motmetrics  # noqa: E402  after the shim above

METRICS = ["idf1", "num_switches", "mota", "num_unique_objects"]
COLUMNS = ["IDF1", "ID sw.", "MOTA", "tracks", "mixed", "people"]
LINKINGS = {"overlap": {}, "motion": {"motion": True}, "motion, gap 10": {"motion": True, "max_gap": 10},
            "motion and appearance": {"motion": True, "appearance": True}}


def mot_scores(truth, tracklets):
    """{idf1, num_switches, mota, num_unique_objects, tracks, mixed} of `tracklets`
    (tracking.Tracklet) against `truth` (footage.Box with ids), frame by frame, matched at IoU 0.5;
    mixed: the tracklets matched to two or more people."""
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
    matched = accumulator.mot_events.query("Type in ('MATCH', 'SWITCH')")
    mixed = int((matched.groupby("HId")["OId"].nunique() > 1).sum())
    return {**{k: float(summary[k].iloc[0]) for k in METRICS}, "tracks": len(tracklets), "mixed": mixed}


def describer_of(run):
    """A gallery.Describer of run folder `run` (its last checkpoint, fp32, on the CPU), or None."""
    if run is None:
        return None
    net, opts = load_trained(run, "last")
    net = net.to(memory_format=torch.channels_last).eval()
    return gallery.Describer(net, torch.device("cpu"), run, "last", gallery.input_size(opts), "fp32", 64, 0)


def sequence_scores(sequence, describer=None):
    """{linking: mot_scores} of the sequence's det/det.txt linked by each of LINKINGS
    (tracking.link_tracklets), against its gt/gt.txt; the appearance linkings need `describer`
    (a gallery.Describer) and are left out without one. Also "pairs": how many pairs of different
    people the appearance linking stood on, and at what cosine."""
    footage = fo.open_footage(sequence)
    truth, _ = fo.read_detections(os.path.join(sequence, fo.GROUND_TRUTH), footage, ground_truth=True)
    boxes, _ = fo.read_detections(os.path.join(sequence, fo.DETECTIONS), footage)
    boxes = [box._replace(id=-1) for box in boxes]  # linked as search.py links boxes without ids
    scores = {}
    for linking, options in LINKINGS.items():
        if options.get("appearance"):
            if describer is None:
                continue
            options = dict(options)
            del options["appearance"]
            boxes, features, _ = gallery.sampled_features(describer, footage, boxes, "det.txt", 1)
            different, same_cosine, different_cosine = gallery.different_people(boxes, features)
            options.update(features=features, same_cosine=same_cosine, different_cosine=different_cosine)
            scores["pairs"] = (len(different), same_cosine)
        scores[linking] = mot_scores(truth, tracking.link_tracklets(boxes, footage.fps, **options))
    return scores


def main():
    p = cli.parser(__doc__)
    p.add_argument("--sequences", nargs="*", default=["../shared/data/footage/TUD-Campus"],
                   help="MOTChallenge sequence folders with det/det.txt and gt/gt.txt")
    p.add_argument("--demo_run", default=os.path.join("model", "demo"),
                   help="run folder whose descriptors link the demo's footage by appearance (bash demo.sh trains it)")
    p.add_argument("--run", default=None,
                   help="run folder whose descriptors link --sequences by appearance (e.g. one trained on "
                        "Market-1501 by real_market.py); not given: motion and overlap only")
    args = p.parse_args()
    print(f"{machine()}; motmetrics {motmetrics.__version__}")
    with tempfile.TemporaryDirectory() as work:
        made = synthetic_footage.make_footage(work, seed=0, video=False)
        sequences = [(f"demo footage {c['name']}", os.path.join(work, c["sequence"]), args.demo_run)
                     for c in made["cameras"]]
        sequences += [(os.path.basename(os.path.normpath(s)), s, args.run) for s in args.sequences]
        print(f"{'footage':<22} {'linking':<22} " + " ".join(f"{c:>6}" for c in COLUMNS))
        for name, sequence, run in sequences:
            run = run if run is not None and os.path.isdir(run) else None
            scores = sequence_scores(sequence, describer_of(run))
            pairs = scores.pop("pairs", None)
            for linking, s in scores.items():
                print(f"{name:<22} {linking:<22} {s['idf1']:6.3f} {s['num_switches']:6.0f} {s['mota']:6.3f} "
                      f"{s['tracks']:6d} {s['mixed']:6d} {s['num_unique_objects']:6.0f}", flush=True)
            if pairs is not None:
                print(f"  appearance: {run}; {pairs[0]} pairs of different people (two boxes of one frame), "
                      + (f"joined without overlap at cosine >= {pairs[1]:.3f}" if pairs[1] is not None else
                         f"too few to join without overlap (fewer than {tracking.MIN_ABOVE / tracking.LINK_FAR:.0f})"))


if __name__ == "__main__":
    main()
