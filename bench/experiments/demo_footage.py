"""Does a run find the people of synthetic footage across its cameras, and judge them rightly? For
each run and each footage written by synthetic_footage.py: every photo of query/ (a person's box
in one camera) against every tracklet of the other cameras (the boxes of gt.txt, linked by their
track ids, which are the people), scored and judged as `search.py --query photo --gallery camera`
scores and judges them (the decision: the run's calibration, or the camera's own pairs of
different people where it has enough). Prints per footage and run: the pairs of one person and of
two, the ROC AUC of cosine over them, how many of each were judged the same person, the cosine of
each pair of one person, and the demo's question: person 4's photo against camera 2.

    python bench/experiments/demo_footage.py --runs model/demo --footage demo_data/footage-demo
"""
import contextlib
import io
import os
import types

import numpy as np

from bench.experiments.tracking import describer_of
from bench.stages import machine
from model import load_head
from reid import cli
from reid.evaluation.verification import FARS
from reid.search import gallery
from reid.search.decisions import FootagePairs, judge_of_run
from reid.search.footage import GROUND_TRUTH


def auc(same, scores):
    """ROC AUC: the chance that a pair of one person scores above a pair of two (ties count half)."""
    one, two = scores[same][:, None], scores[~same][None, :]
    return float((one > two).mean() + 0.5 * (one == two).mean())


def main():
    p = cli.parser(__doc__)
    p.add_argument("--runs", nargs="+", required=True, help="run folders (model/<name>) to judge with")
    p.add_argument("--footage", nargs="+", default=["demo_data/footage-demo"],
                   help="folders written by synthetic_footage.py (cam1/, cam2/, ..., query/)")
    p.add_argument("--far", type=float, default=FARS[0], choices=FARS, help="false-accept rate of the decisions")
    args = p.parse_args()
    print(machine())
    flags = types.SimpleNamespace(ground_truth=True, stride=1)  # search.py's, as --ground_truth sets them
    for run in args.runs:
        describer = describer_of(run)
        head = load_head(run, "last")
        for root in args.footage:
            cameras = sorted(c for c in os.listdir(root) if os.path.isdir(os.path.join(root, c, "gt")))
            queries = sorted(os.listdir(os.path.join(root, "query")))
            with contextlib.redirect_stdout(io.StringIO()):  # search.py's lines of each footage
                described = {c: gallery.describe_at(os.path.join(root, c), os.path.join(root, c, GROUND_TRUTH),
                                                    describer, flags, []) for c in cameras}
                features = describer.extract([os.path.join(root, "query", q) for q in queries], "queries")[0]
            same, cosine, judged, person4 = [], [], [], ""
            for camera in cameras:
                with contextlib.redirect_stderr(io.StringIO()):  # the note of too few pairs
                    judge = judge_of_run(run, "last", head, args.far, footage=FootagePairs.of([described[camera]]))
                d = described[camera]
                for name, feature in zip(queries, features):
                    person, seen = int(name[:4]), name.split("_")[1]
                    if seen == camera:
                        continue
                    for tracklet, tracklet_feature in zip(d.tracklets, d.features):
                        score = float(tracklet_feature @ feature)
                        decision = judge.scores(score, 0.0)["same"]
                        same.append(tracklet.id == person)
                        cosine.append(score)
                        judged.append(decision)
                        if person == 4 and tracklet.id == 4:
                            said = "same" if decision else "different"
                            person4 = f"; person 4 in {camera}: cosine {score:.3f}, {said}"
            same, cosine, judged = np.array(same), np.array(cosine), np.array(judged, bool)
            print(f"{run} on {root}: {int(same.sum())} pairs of one person, {int((~same).sum())} of two; AUC "
                  f"{auc(same, cosine):.3f}; judged the same: {int(judged[same].sum())}/{int(same.sum())} of one "
                  f"person, {int(judged[~same].sum())}/{int((~same).sum())} of two{person4}; cosine of the pairs "
                  f"of one person {np.round(np.sort(cosine[same]), 2).tolist()}", flush=True)


if __name__ == "__main__":
    main()
