"""Stage 4: Rank@1/5/10 and mAP of the features in pytorch_result.mat, by the
Market-1501 protocol (metrics.py), and the multi-query result when
multi_query.mat lies beside it. evaluate_gpu.py is the same on CUDA.
"""
import argparse
import os
import sys

import numpy as np

from data import MULTI_KEYS, RESULT_KEYS, load_features
from metrics import format_line, multi_query_features, rank_queries, summarize


def check(arrays, path, sides):
    """Features and labels must line up and be finite, or the ranking means nothing."""
    for side in sides:
        f, labels, cams = (arrays[f"{side}_f"], arrays[f"{side}_label"], arrays[f"{side}_cam"])
        if len(f) == 0:
            sys.exit(f"error: {path} holds no {side} features; rerun test.py")
        if not (len(f) == len(labels) == len(cams)):
            sys.exit(f"error: {path} has {len(f)} {side} features but {len(labels)} labels and {len(cams)} cameras; rerun test.py")
        if not np.isfinite(f).all():
            sys.exit(f"error: {path} has NaN or infinite {side} features; retrain or rerun test.py")
        if f.shape[1] != arrays[f"{sides[0]}_f"].shape[1]:
            sys.exit(f"error: {path} has {arrays[f'{sides[0]}_f'].shape[1]}-d {sides[0]} but {f.shape[1]}-d {side} features")


def report(result, path, device, prefix=""):
    first, ap = rank_queries(result["query_f"], result["query_label"], result["query_cam"],
                             result["gallery_f"], result["gallery_label"], result["gallery_cam"], device=device)
    try:
        print(format_line(summarize(first, ap), prefix))
    except ValueError as e:
        sys.exit(f"error: {path}: {e}")


def main(argv=None, device="cpu"):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--result", default="pytorch_result.mat", help="feature file written by test.py")
    args = p.parse_args(argv)

    result = load_features(args.result, RESULT_KEYS)
    check(result, args.result, ("query", "gallery"))
    report(result, args.result, device)

    multi_path = os.path.join(os.path.dirname(args.result), "multi_query.mat")
    if os.path.isfile(multi_path):
        multi = load_features(multi_path, MULTI_KEYS)
        check({**result, **multi}, multi_path, ("query", "mquery"))
        result["query_f"] = multi_query_features(result["query_f"], result["query_label"], result["query_cam"],
                                                 multi["mquery_f"], multi["mquery_label"], multi["mquery_cam"])
        report(result, multi_path, device, prefix="multi ")


if __name__ == "__main__":
    main()
