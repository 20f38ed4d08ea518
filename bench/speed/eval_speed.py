"""Evaluation speed and memory at Market-1501 and MSMT17 size.

Builds features with the sizes of the real test sets (ids clustered around a
centre per person, a pull per camera, noise; junk and distractors as Market-1501
has them), then times, each in a fresh process so that peak memory is its own:
    multiply   the query x gallery score matrix alone (float32, in blocks), the floor
    ours       metrics.rank_queries + summarize: everything evaluate.py computes
    loop       a plain per-query loop as the original evaluate.py does it (argsort of the
               whole gallery, np.isin (in1d) for junk and good matches, AP per good match)
    rerank     this repo's evaluation with k-reciprocal re-ranking (Market-1501 size only)
For MSMT17 the loop runs on the first --loop_queries queries and its time is scaled
to all queries (printed as such). Peak memory is the process's maximum resident set.

    python bench/speed/eval_speed.py                 # Market-1501 and MSMT17 sizes
    python bench/speed/eval_speed.py --sizes market  # just one
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from reid import cli
from reid.evaluation.metrics import BLOCK_ELEMENTS, Side, k_reciprocal_scores, rank_queries, summarize

FEATURE_FILES = ("qf", "ql", "qc", "gf", "gl", "gc")
SIZES = {
    # queries, test ids, gallery images of test ids, junk (-1), distractors (0), cameras
    "market": dict(queries=3368, ids=750, gallery=13115, junk=3819, distractors=2798, cameras=6),
    "msmt17": dict(queries=11659, ids=3060, gallery=82161, junk=0, distractors=0, cameras=15),
}


def make_features(queries, ids, gallery, junk, distractors, cameras, dim=512, seed=0):
    """Unit features: id centre + camera pull + noise; at Market-1501 size these weights give
    about Rank@1 0.89 and mAP 0.70, the level of the original's trained model."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal((ids + distractors, dim), dtype=np.float32)
    camera = rng.standard_normal((cameras + 1, dim), dtype=np.float32)

    def draw(labels, cams):
        f = centre[labels] + 0.83 * camera[cams] + 0.85 * rng.standard_normal((len(labels), dim), dtype=np.float32)
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    gl = rng.integers(0, ids, gallery)
    gc = rng.integers(1, cameras + 1, gallery)
    ql = rng.integers(0, ids, queries)
    qc = rng.integers(1, cameras + 1, queries)
    gf, qf = draw(gl, gc), draw(ql, qc)
    distractor_ids = ids + rng.integers(0, max(distractors, 1), distractors)
    extra_c = rng.integers(1, cameras + 1, distractors + junk)
    extra_f = np.concatenate([draw(distractor_ids, extra_c[:distractors]),
                              draw(rng.integers(0, ids + distractors, junk), extra_c[distractors:])])
    # ids start at 1 (0 is the distractor label, -1 junk), as in Market-1501
    gf = np.concatenate([gf, extra_f])
    gl = np.concatenate([gl + 1, np.zeros(distractors, np.int64), -np.ones(junk, np.int64)])
    gc = np.concatenate([gc, extra_c])
    return qf, ql + 1, qc, gf, gl, gc


def multiply(qf, gf):
    """The score matrix in the blocks rank_queries uses, results discarded."""
    q, g = torch.from_numpy(qf), torch.from_numpy(gf)
    step = max(1, BLOCK_ELEMENTS // len(g))
    for start in range(0, len(q), step):
        q[start:start + step] @ g.T
    return {}


def original_loop(qf, ql, qc, gf, gl, gc):
    """Per query, as the original evaluate.py: full argsort, then junk and good by set operations."""
    g = torch.from_numpy(gf)
    first, aps = [], []
    for i in range(len(qf)):
        score = torch.mm(g, torch.from_numpy(qf[i]).view(-1, 1)).squeeze(1).numpy()
        index = np.argsort(score)[::-1]
        same_id = np.argwhere(gl == ql[i]).flatten()
        same_cam = np.argwhere(gc == qc[i]).flatten()
        good = np.setdiff1d(same_id, same_cam, assume_unique=True)
        junk = np.append(np.intersect1d(same_id, same_cam), np.argwhere(gl == -1).flatten())
        if good.size == 0:
            first.append(-1)
            aps.append(np.nan)
            continue
        index = index[np.isin(index, junk, invert=True)]
        rows = np.argwhere(np.isin(index, good)).flatten()
        ap = 0.0
        for k, r in enumerate(rows):
            previous = k / r if r != 0 else 1.0
            ap += ((k + 1) / (r + 1) + previous) / 2 / len(good)
        first.append(rows[0])
        aps.append(ap)
    return {"first": np.array(first), "ap": np.array(aps)}


def measure(folder, method, loop_queries, repeats):
    qf, ql, qc, gf, gl, gc = (np.load(os.path.join(folder, f"{k}.npy")) for k in FEATURE_FILES)
    query, gallery = Side(qf, ql, qc), Side(gf, gl, gc)
    rss_features = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    times = []
    if method in ("multiply", "ours"):
        for _ in range(repeats):
            start = time.perf_counter()
            result = summarize(rank_queries(query, gallery)) if method == "ours" else multiply(qf, gf)
            times.append(time.perf_counter() - start)
    elif method == "rerank":
        result = summarize(rank_queries(query, gallery, score_block=k_reciprocal_scores(qf, gf)))
        times.append(time.perf_counter() - start)
    else:
        n = min(loop_queries, len(qf))
        ranks = original_loop(qf[:n], ql[:n], qc[:n], gf, gl, gc)
        times.append(time.perf_counter() - start)
        ours = rank_queries(query[:n], gallery)
        valid = ranks["first"] >= 0
        result = {"queries": n, "Rank@1": float(np.mean(ranks["first"][valid] < 1)),
                  "mAP": float(np.mean(ranks["ap"][valid])),
                  "max |AP - ours|": float(np.nanmax(np.abs(ranks["ap"] - ours["ap"]))),
                  "same first match": bool((ranks["first"] == ours["first"]).all())}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": min(times), "first_seconds": times[0], "peak_mib": peak, "features_mib": rss_features,
                      "result": result}))


def run(folder, method, loop_queries, repeats):
    out = subprocess.run([sys.executable, __file__, "--child", folder, method, "--loop_queries", str(loop_queries),
                          "--repeats", str(repeats)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = cli.parser(__doc__)
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES), help="test-set sizes to run")
    p.add_argument("--loop_queries", type=int, default=1000,
                   help="queries the per-query loop runs at MSMT17 size (its time is scaled to all queries)")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of the multiply and of this repo's evaluation; the fastest is reported (and the first)")
    p.add_argument("--child", nargs=2, metavar=("FOLDER", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        measure(*args.child, args.loop_queries, args.repeats)
        return

    print(f"torch {torch.__version__}, numpy {np.__version__}, {torch.get_num_threads()} threads")
    for size in args.sizes:
        s = SIZES[size]
        n_gallery = s["gallery"] + s["junk"] + s["distractors"]
        loop_queries = s["queries"] if size == "market" else args.loop_queries
        print(f"\n{size}: {s['queries']} queries x {n_gallery} gallery images ({s['junk']} junk, "
              f"{s['distractors']} distractors), 512-d, {s['cameras']} cameras")
        with tempfile.TemporaryDirectory() as folder:
            for name, array in zip(FEATURE_FILES, make_features(**s)):
                np.save(os.path.join(folder, f"{name}.npy"), array)
            mm, ours, loop = (run(folder, m, loop_queries, args.repeats) for m in ("multiply", "ours", "loop"))
            rerank = run(folder, "rerank", loop_queries, 1) if size == "market" else None
        loop_all = loop["seconds"] * s["queries"] / loop["result"]["queries"]
        scaled = ("" if loop["result"]["queries"] == s["queries"]
                  else f" (scaled from {loop['result']['queries']} queries)")
        print(f"  multiply alone   {mm['seconds']:8.2f} s   peak {mm['peak_mib']:6.0f} MiB   "
              f"(first run {mm['first_seconds']:.2f} s)")
        print(f"  this repo        {ours['seconds']:8.2f} s   peak {ours['peak_mib']:6.0f} MiB   "
              f"(first run {ours['first_seconds']:.2f} s; after loading the features {ours['features_mib']:.0f} MiB)")
        print(f"  per-query loop   {loop_all:8.2f} s{scaled}   peak {loop['peak_mib']:6.0f} MiB")
        print(f"  this repo / multiply = {ours['seconds'] / mm['seconds']:.2f}x, "
              f"loop / this repo = {loop_all / ours['seconds']:.1f}x")
        r = ours["result"]
        print(f"  metrics: Rank@1 {r['Rank@1']:.6f} mAP {r['mAP']:.6f} (non-interpolated {r['mAP_standard']:.6f}, "
              f"mINP {r['mINP']:.6f})")
        if rerank:
            r = rerank["result"]
            print(f"  with --rerank    {rerank['seconds']:8.2f} s   peak {rerank['peak_mib']:6.0f} MiB   "
                  f"Rank@1 {r['Rank@1']:.6f} mAP {r['mAP']:.6f}")
        lr = loop["result"]
        print(f"  loop on its {lr['queries']} queries: Rank@1 {lr['Rank@1']:.6f} mAP {lr['mAP']:.6f}; "
              f"same first matches as this repo: {lr['same first match']}, "
              f"largest AP difference {lr['max |AP - ours|']:.1e}")


if __name__ == "__main__":
    main()
