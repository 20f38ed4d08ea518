"""Can search.py's decisions on footage be trusted? For each run and each MOTChallenge sequence with
ground truth: the sequence's det/det.txt described and linked as search.py does, each tracklet
given the person of its ground truth it mostly covers (boxes matched at IoU 0.5), and every pair
of tracklets judged same or different as a search judges them, by the run's own calibration and by
the footage's (decisions.py: the threshold at --far set on the footage's pairs of different
people, two people apart on one frame). Two kinds of pair:
    tracklets      a tracklet's mean descriptor against another's (search.py without --query)
    box queries    the middle box of each tracklet, as a photo cut from the footage, against every
                   other tracklet (search.py --query)
For each: how many of the pairs of two different people were judged the same person (false
accepts: the goal is at most 1 in 10), and how many of the pairs of one person (fragments of one
person's track, or a photo and the rest of them) were (true accepts: the goal is at least half).

And the statistic of the collapse warning for each run: the median cosine similarity of the
footage's pairs of different people (two boxes of one frame, apart), beside search.py's older one
(boxes of two different tracklets, which counts fragments of one person as different people).

    python bench/experiments/footage_decisions.py --runs data/real_market/model/recipe_s0 model/demo
"""
import os

import numpy as np

from bench.experiments.tracking import describer_of
from bench.stages import machine
from model import load_head
from reid import cli
from reid.evaluation.verification import FARS, median_pair_cosine
from reid.search import footage as fo
from reid.search import gallery, tracking
from reid.search.decisions import FootagePairs, judge_of_run

MATCH_IOU = 0.5
GRID = np.linspace(-1, 1, 2001)  # the cosine a judge's threshold falls at, to 0.001


def people_of(tracklets, truth):
    """The person of the ground truth each tracklet mostly covers (-1: none of its boxes matched)."""
    by_frame = {}
    for box in truth:
        by_frame.setdefault(box.frame, []).append(box)
    people = []
    for t in tracklets:
        votes = {}
        for box in t.boxes:
            here = by_frame.get(box.frame, [])
            if here:
                overlap = tracking.iou_matrix([box], here)[0]
                if overlap.max() >= MATCH_IOU:
                    person = here[int(overlap.argmax())].id
                    votes[person] = votes.get(person, 0) + 1
        people.append(max(votes, key=votes.get) if votes else -1)
    return np.array(people)


def judged(judge, cosine):
    """Whether each pair of cosine similarity `cosine` is judged the same person, as search.py judges
    a pair by cosine (the head's logit is not needed: P(same) comes from cosine)."""
    return np.array([judge.scores(float(c), 0.0)["same"] for c in cosine], bool)


def rates(same, accepted):
    """'accepted / pairs' of the pairs of two people and of one person."""
    return [f"{int(accepted[~same].sum())}/{int((~same).sum())}", f"{int(accepted[same].sum())}/{int(same.sum())}"]


def main():
    p = cli.parser(__doc__)
    p.add_argument("--runs", nargs="+", required=True, help="run folders (model/<name>) to judge with")
    p.add_argument("--sequences", nargs="*", default=["../shared/data/footage/TUD-Campus"],
                   help="MOTChallenge sequence folders with det/det.txt and gt/gt.txt")
    p.add_argument("--far", type=float, default=FARS[0], choices=FARS, help="false-accept rate of the decisions")
    args = p.parse_args()
    print(machine())
    print(f"{'footage':<14} {'run':<34} {'pairs':<14} {'calibration':<11} {'2 people':>9} {'1 person':>9} "
          f"{'at cosine':>9}")
    warnings = []
    for sequence in args.sequences:
        footage = fo.open_footage(sequence)
        truth, _ = fo.read_detections(os.path.join(sequence, fo.GROUND_TRUTH), footage, ground_truth=True)
        boxes, _ = fo.read_detections(os.path.join(sequence, fo.DETECTIONS), footage)
        boxes = [box._replace(id=-1) for box in boxes]
        for run in args.runs:
            d = gallery.describe_footage(describer_of(run), footage, boxes, "det.txt", 1)
            people = people_of(d.tracklets, truth)
            known = np.flatnonzero(people >= 0)
            i, j = np.triu_indices(len(known), k=1)
            tracklet_pairs = np.einsum("ij,ij->i", d.features[known[i]], d.features[known[j]])
            tracklet_same = people[known[i]] == people[known[j]]
            middles = [start + (stop - start) // 2 for start, stop in d.spans()]
            q, g = np.meshgrid(known, known, indexing="ij")
            off = q != g
            box_pairs = np.einsum("ij,ij->i", d.box_features[np.array(middles)[q[off]]], d.features[g[off]])
            box_same = people[q[off]] == people[g[off]]
            for calibration, pairs in (("the run's", None), ("footage's", FootagePairs.of([d]))):
                judge = judge_of_run(run, "last", load_head(run, "last"), args.far, footage=pairs)
                for kind, cosine, same in (("tracklets", tracklet_pairs, tracklet_same),
                                           ("box queries", box_pairs, box_same)):
                    two, one = rates(same, judged(judge, cosine))
                    print(f"{footage.name:<14} {run[-34:]:<34} {kind:<14} {calibration:<11} {two:>9} {one:>9} "
                          f"{GRID[judged(judge, GRID)].min():9.3f}", flush=True)
            warnings.append((footage.name, run, float(np.median(d.different)) if len(d.different) else None,
                             median_pair_cosine(d.box_features, d.owners()), len(d.different)))
    print("\ncollapse warning's statistic: median cosine of pairs of different people")
    print(f"{'footage':<14} {'run':<34} {'same frame':>10} {'pairs':>6} {'2 tracklets':>11}")
    for name, run, frame, tracklets, count in warnings:
        print(f"{name:<14} {run[-34:]:<34} {frame if frame is None else round(frame, 3)!s:>10} {count:>6} "
              f"{tracklets:11.3f}")


if __name__ == "__main__":
    main()
