"""Stage 4: Rank@1/5/10 and mAP of the features in pytorch_result.mat, by the
Market-1501 protocol (metrics.py), and the multi-query result when
multi_query.mat lies beside it. Each result is two lines: the original's
(trapezoid AP), then the non-interpolated mAP and mINP of torchreid and
fast-reid. evaluate_gpu.py is the same on CUDA.
"""
import os
import sys

import numpy as np

import cli
from data import MULTI_KEYS, RESULT_KEYS, load_features
from metrics import format_lines, k_reciprocal_scores, multi_query_features, rank_queries, summarize


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
        zero = np.flatnonzero(~f.any(axis=1))
        if len(zero):
            sys.exit(f"error: {path} has {len(zero)} all-zero {side} feature(s) (row {zero[0]} first), which match "
                     f"nothing; rerun test.py, and check those images")
        if f.shape[1] != arrays[f"{sides[0]}_f"].shape[1]:
            sys.exit(f"error: {path} has {arrays[f'{sides[0]}_f'].shape[1]}-d {sides[0]} but {f.shape[1]}-d {side} features")


def report(result, path, device, args, prefix=""):
    rerank = None
    if args.rerank:
        rerank = k_reciprocal_scores(result["query_f"], result["gallery_f"], k1=args.k1, k2=args.k2,
                                     lambda_value=args.lambda_value, device=device)
    ranks = rank_queries(result["query_f"], result["query_label"], result["query_cam"],
                         result["gallery_f"], result["gallery_label"], result["gallery_cam"], device=device,
                         score_block=rerank)
    try:
        print("\n".join(format_lines(summarize(ranks), prefix)))
    except ValueError as e:
        sys.exit(f"error: {path}: {e}")


def main(argv=None, device="cpu"):
    p = cli.parser(__doc__)
    p.add_argument("--result", default="pytorch_result.mat", help="feature file written by test.py")
    p.add_argument("--rerank", action="store_true",
                   help="rank by the k-reciprocal re-ranked distance (Zhong et al., CVPR 2017) instead of cosine")
    p.add_argument("--k1", type=int, default=20, help="re-ranking: size of the k-reciprocal neighbourhood")
    p.add_argument("--k2", type=int, default=6, help="re-ranking: neighbours averaged in local query expansion")
    p.add_argument("--lambda_value", type=float, default=0.3,
                   help="re-ranking: weight of the original distance (1 - it weighs the Jaccard distance)")
    args = p.parse_args(argv)
    if args.rerank and (args.k1 < 1 or args.k2 < 1 or not 0 <= args.lambda_value <= 1):
        sys.exit("error: --k1 and --k2 must be at least 1 and --lambda_value within [0, 1]")
    if args.rerank:
        print(f"note: k-reciprocal re-ranking, k1={args.k1} k2={args.k2} lambda={args.lambda_value}", file=sys.stderr)

    result = load_features(args.result, RESULT_KEYS)
    check(result, args.result, ("query", "gallery"))
    report(result, args.result, device, args)

    multi_path = os.path.join(os.path.dirname(args.result), "multi_query.mat")
    if os.path.isfile(multi_path):
        multi = load_features(multi_path, MULTI_KEYS)
        check({**result, **multi}, multi_path, ("query", "mquery"))
        result["query_f"] = multi_query_features(result["query_f"], result["query_label"], result["query_cam"],
                                                 multi["mquery_f"], multi["mquery_label"], multi["mquery_cam"])
        report(result, multi_path, device, args, prefix="multi ")


if __name__ == "__main__":
    cli.run_main(main)
