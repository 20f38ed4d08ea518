"""Stage 4: Rank@1/5/10 and mAP of the features in pytorch_result.mat, by the
Market-1501 protocol (metrics.py), and the multi-query result when
multi_query.mat lies beside it. Each result is two lines: the original's
(trapezoid AP), then the non-interpolated mAP and mINP of torchreid and
fast-reid. evaluate_gpu.py is the same on CUDA.

When the result file holds the run's verification head (test.py writes it for
runs that saved one), it then answers "same person?" over every query-gallery
pair of the protocol (verification.py), for cosine similarity and for the head
side by side: ROC AUC, equal error rate, true-accept rate at false-accept rates
1e-2 and 1e-3; and Rank@1/mAP with the gallery ranked by the head instead of
cosine (the paper ranks by cosine). --roc draws the ROC curves.

When it also holds the run's calibration of P(same) (fitted at the end of training,
thresholds.yaml: beta calibration of cosine, Platt scaling of the head's logit), it says how
well the probabilities hold on these pairs: the expected calibration error (ECE, 15 bins of
P(same)) and the Brier score of the head's raw P(same) (sigmoid of its logit) and of the
calibrated P(same) of the head and of cosine, at the prior the calibration assumed. --reliability
draws the reliability diagram.
And the run's same-person thresholds (the ones search.py decides with, picked for a false-accept
rate on other pairs): the false-accept and true-accept rates they actually reach on these pairs.
"""
import os
import sys

import numpy as np
import torch

from reid import cli
from reid.cli import UserError
from reid.data import CALIBRATION_KEYS, HEAD_KEYS, MULTI_KEYS, RESULT_KEYS, load_features
from reid.evaluation.metrics import (
    Side,
    format_lines,
    k_reciprocal_scores,
    multi_query_features,
    rank_queries,
    summarize,
)
from reid.evaluation.verification import (
    ECE_BINS,
    FARS,
    beta_logit,
    brier_score,
    expected_calibration_error,
    head_block,
    pair_reliability,
    probability,
    rates_at,
    roc,
    summarize_roc,
)
from reid.runs import atomic_path


def check(arrays, path, sides):
    """Features and labels must line up and be finite, or the ranking means nothing."""
    for side in sides:
        f, labels, cams = (arrays[f"{side}_f"], arrays[f"{side}_label"], arrays[f"{side}_cam"])
        if len(f) == 0:
            raise UserError(f"{path} holds no {side} features; rerun test.py")
        if not (len(f) == len(labels) == len(cams)):
            raise UserError(f"{path} has {len(f)} {side} features but {len(labels)} labels and {len(cams)} cameras; "
                            "rerun test.py")
        if not np.isfinite(f).all():
            raise UserError(f"{path} has NaN or infinite {side} features; retrain or rerun test.py")
        zero = np.flatnonzero(~f.any(axis=1))
        if len(zero):
            raise UserError(f"{path} has {len(zero)} all-zero {side} feature(s) (row {zero[0]} first), which match "
                            f"nothing; rerun test.py, and check those images")
        if f.shape[1] != arrays[f"{sides[0]}_f"].shape[1]:
            raise UserError(f"{path} has {arrays[f'{sides[0]}_f'].shape[1]}-d {sides[0]} but {f.shape[1]}-d {side} "
                            "features")


def report(result, path, device, args, prefix="", score_block=None):
    query, gallery = Side.of(result, "query"), Side.of(result, "gallery")
    if args.rerank and score_block is None:
        score_block = k_reciprocal_scores(query.features, gallery.features, k1=args.k1, k2=args.k2,
                                          lambda_value=args.lambda_value, device=device)
    ranks = rank_queries(query, gallery, device=device, score_block=score_block)
    try:
        print("\n".join(format_lines(summarize(ranks), prefix)))
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None


def verification_report(result, path, device, args):
    """Same person or not, over every query-gallery pair: cosine and the head side by side."""
    pairs = Side.of(result, "query"), Side.of(result, "gallery")
    head = "verif_w" in result
    curves = {"cosine": roc(*pairs, device=device)}
    if head:
        w, b = result["verif_w"].reshape(-1), float(result["verif_b"].reshape(-1)[0])
        curves["head"] = roc(*pairs, w=w, b=b, device=device)
    c = curves["cosine"]
    print(f"verification over every query-gallery pair ({c['positives']:,} positive: same id, other camera; "
          f"{c['negatives']:,} negative; junk left out):")
    print(f"  {'score':<7} {'ROC AUC':>7} {'EER':>7}" + "".join(f" {'TAR@FAR=' + format(f, 'g'):>13}" for f in FARS))
    summaries = {name: summarize_roc(curve) for name, curve in curves.items()}
    for name, s in summaries.items():
        print(f"  {name:<7} {s['auc']:7.4f} {s['eer']:7.4f}" + "".join(f" {s[f'tar@far={f:g}']:13.4f}" for f in FARS))
    if head:
        report(result, path, device, args, prefix="ranked by the head: ",
               score_block=head_block(result["query_f"], result["gallery_f"], w, b, device))
    if args.roc:
        draw_roc(args.roc, curves, summaries)
    if "calibration_prior" in result:
        calibration_report(result, pairs, curves["cosine"], device, args)
    if "threshold_cosine" in result:
        threshold_report(result, pairs, device)


def calibration_report(result, pairs, curve, device, args):
    """ECE and Brier score of P(same) over every pair: the head's raw output, and the calibrated
    P(same) of each score the run's calibration covers."""
    prior = float(result["calibration_prior"].reshape(-1)[0])
    w = result["verif_w"].reshape(-1) if "verif_w" in result else None
    b = float(result["verif_b"].reshape(-1)[0]) if w is not None else 0.0
    kinds = {}  # name -> (w, b of the score, its probability)
    if w is not None:
        kinds["head, raw sigmoid"] = (w, b, probability)
    if "platt_head" in result and w is not None:
        a, c = (float(v) for v in result["platt_head"].reshape(-1))
        kinds["head, calibrated"] = (w, b, lambda s: probability(a * s + c))
    beta = [float(v) for v in result["beta_cosine"].reshape(-1)]
    kinds["cosine, calibrated"] = (None, 0.0, lambda s: probability(beta_logit(s, *beta)))
    sums = {name: pair_reliability(*pairs, to_probability=f, w=sw, b=sb, device=device)
            for name, (sw, sb, f) in kinds.items()}
    share = curve["positives"] / (curve["positives"] + curve["negatives"])
    print(f"calibration of P(same) over the same pairs (fitted at the end of training with a prior of {prior:.4f}; "
          f"here {share:.4f} of the pairs are positive):")
    print(f"  {'P(same) of':<20} {'ECE':>7} {'Brier':>8}")
    for name, s in sums.items():
        print(f"  {name:<20} {expected_calibration_error(s, None):7.4f} {brier_score(s, None):8.5f}")
    if args.reliability:
        draw_reliability(args.reliability, sums)


def threshold_report(result, pairs, device):
    """The run's thresholds, each picked for a false-accept rate on its calibration pairs: the rates
    they reach on these pairs. On people never trained on, FAR reached near FAR wanted means the
    thresholds transfer; far above it, that deployed decisions accept more strangers than promised."""
    fars = result["threshold_far"].reshape(-1)
    scores = {"cosine": (None, 0.0, lambda s: s, result["threshold_cosine"].reshape(-1))}
    if "threshold_head" in result and "verif_w" in result:
        scores["head"] = (result["verif_w"].reshape(-1), float(result["verif_b"].reshape(-1)[0]), probability,
                          result["threshold_head"].reshape(-1))
    unseen = bool(result["threshold_unseen"].reshape(-1)[0]) if "threshold_unseen" in result else False
    print("the run's thresholds (search.py decides with them), picked on "
          + ("people never trained on" if unseen else "people the run was trained on (train_new.py: val against train; "
                                                      "adapt.py: its own groups of the new cameras' images)")
          + ", on these pairs:")
    print(f"  {'score':<7} {'FAR wanted':>10} {'threshold':>10} {'FAR reached':>11} {'TAR reached':>11}")
    for name, (w, b, decided, thresholds) in scores.items():
        far, tar = rates_at(*pairs, thresholds, decided=decided, w=w, b=b, device=device)
        for f, t, got, accepted in zip(fars, thresholds, far, tar):
            print(f"  {name:<7} {f:10g} {t:10.4f} {got:11.5f} {accepted:11.4f}")


def draw_reliability(path, sums):
    import matplotlib  # here, as in draw_roc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, counts) = plt.subplots(2, 1, figsize=(5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":", label="perfect calibration")
    centres = (np.arange(ECE_BINS) + 0.5) / ECE_BINS
    for name, s in sums.items():
        used = s["count"] > 0
        ax.plot(s["p"][used] / s["count"][used], s["same"][used] / s["count"][used], marker="o", markersize=3,
                label=f"{name}: ECE {expected_calibration_error(s, None):.4f}")
        counts.bar(centres, s["count"], width=1 / ECE_BINS, alpha=0.4, label=name)
    ax.set_ylabel("share of pairs that are the same person")
    ax.set_title(f"reliability of P(same), {ECE_BINS} bins, every query-gallery pair", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    counts.set_yscale("log")
    counts.set_xlabel("predicted P(same) (mean of the bin)")
    counts.set_ylabel("pairs")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    print(f"wrote {os.path.abspath(path)}")


def draw_roc(path, curves, summaries):
    import matplotlib  # here: only --roc needs it, and evaluate.py should start fast
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, curve in curves.items():
        s = summaries[name]
        # the ROC is a staircase: FAR grows at fixed TAR, then TAR at fixed FAR (verification.py)
        ax.plot(np.concatenate([[0], curve["far"], [1]]), np.concatenate([[0], curve["tar"], [1]]),
                drawstyle="steps-post", label=f"{name}: AUC {s['auc']:.4f}, EER {s['eer']:.4f}")
    for f in FARS:
        ax.axvline(f, color="grey", linewidth=0.5, linestyle=":")
    ax.set_xscale("symlog", linthresh=1e-4)
    ax.set_xlim(0, 1)
    ax.set_xlabel("false-accept rate (negative pairs judged the same person)")
    ax.set_ylabel("true-accept rate")
    ax.set_title("same person? every query-gallery pair", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    print(f"wrote {os.path.abspath(path)}")


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--result", default="pytorch_result.mat", help="feature file written by test.py")
    p.add_argument("--rerank", action="store_true",
                   help="rank by the k-reciprocal re-ranked distance (Zhong et al., CVPR 2017) instead of cosine")
    p.add_argument("--k1", type=int, default=20, help="re-ranking: size of the k-reciprocal neighbourhood")
    p.add_argument("--k2", type=int, default=6, help="re-ranking: neighbours averaged in local query expansion")
    p.add_argument("--lambda_value", type=float, default=0.3,
                   help="re-ranking: weight of the original distance (1 - it weighs the Jaccard distance)")
    p.add_argument("--roc", default=None,
                   help="also draw the ROC curves (cosine, and the verification head where the file holds it) "
                        "into this PNG file")
    p.add_argument("--reliability", default=None,
                   help="also draw the reliability diagram of P(same) (where the file holds the run's calibration) "
                        "into this PNG file")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where the ranking's arithmetic runs (evaluate_gpu.py passes cuda; on a machine without CUDA "
                        "it runs on the CPU); the protocol and the numbers are the same")
    args = p.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("note: CUDA is not available; evaluating on the CPU", file=sys.stderr)
        device = "cpu"
    if args.rerank and (args.k1 < 1 or args.k2 < 1 or not 0 <= args.lambda_value <= 1):
        raise UserError("--k1 and --k2 must be at least 1 and --lambda_value within [0, 1]")
    if args.rerank:
        print(f"note: k-reciprocal re-ranking, k1={args.k1} k2={args.k2} lambda={args.lambda_value}", file=sys.stderr)

    result = load_features(args.result, RESULT_KEYS, optional=HEAD_KEYS + CALIBRATION_KEYS)
    check(result, args.result, ("query", "gallery"))
    if args.reliability and "calibration_prior" not in result:
        raise UserError(f"--reliability needs a calibration of P(same), and {args.result} holds none: its run's "
                        f"thresholds.yaml has none (trained before calibrations were fitted); train it again, or leave "
                        f"--reliability out")
    report(result, args.result, device, args)
    single = dict(result)

    multi_path = os.path.join(os.path.dirname(args.result), "multi_query.mat")
    if os.path.isfile(multi_path):
        multi = load_features(multi_path, MULTI_KEYS)
        check({**result, **multi}, multi_path, ("query", "mquery"))
        result["query_f"] = multi_query_features(Side.of(result, "query"), Side.of(multi, "mquery")).features
        report(result, multi_path, device, args, prefix="multi ")
    if any(k in single for k in ("verif_w", "calibration_prior", "threshold_cosine")) or args.roc or args.reliability:
        verification_report(single, args.result, device, args)


if __name__ == "__main__":
    cli.run_main(main)
