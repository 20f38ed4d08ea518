"""How long grouping takes, and how much memory, at 10,000 to 1,000,000 descriptors: adapt.py's
step between describing and training (reid/grouping.py: neighbours, k-reciprocal Jaccard
distances on them, DBSCAN on that sparse graph; nothing N x N).

    python bench/speed/cluster_speed.py                       # 10,000, 100,000 and 1,000,000
    python bench/speed/cluster_speed.py --sizes 10000 100000  # fewer

Descriptors are drawn synthetically: people as random directions in 512 dimensions, each seen
--per_person times with noise, L2-normalised as the network's are. Each size runs in a process of
its own; its peak memory is the resident set's high-water mark from the moment the descriptors are
drawn (Linux's VmHWM, reset then): the descriptors themselves (2 GB at a million), Python, torch and
faiss (about 1.2 GB) and what grouping adds. For each size: the neighbour search (exact: blocks of a matrix product in
torch, at sizes up to --exact_up_to; faiss's inverted file, at every size: grouping.py uses the
first up to grouping.EXACT_LIMIT), the Jaccard distances, DBSCAN, the total, the peak memory, the
share of each descriptor's neighbours that are its own person's (the search's quality), and how
well the groups match the people drawn (purity: the share of grouped descriptors that belong to
their group's main person; coverage: the share grouped).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from bench.stages import REPO, machine


def draw(n, per_person, dim, noise, seed=0):
    """(descriptors, person of each): drawn a block at a time into one float32 array, so that
    drawing needs little more memory than the descriptors themselves."""
    rng = np.random.default_rng(seed)
    people = -(-n // per_person)
    labels = np.repeat(np.arange(people), per_person)[:n]
    centres = rng.standard_normal((people, dim), dtype=np.float32)
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, 1 << 16):
        block = slice(start, min(n, start + (1 << 16)))
        x[block] = centres[labels[block]] + noise * rng.standard_normal((block.stop - start, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def resident_peak():
    """The process's peak resident memory since the last reset_peak() (Linux's VmHWM), in GB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 2**20


def reset_peak():
    """Start the peak of resident memory again from what the process holds now (Linux 4.0 and later)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def one_size(n, per_person, noise, exact):
    """Run in a child process: the timings of one size, as a dict."""
    import torch

    from reid import grouping
    grouping.EXACT_LIMIT = n if exact else 0
    x, labels = draw(n, per_person, 512, noise)
    out_held = x.nbytes / 2**30
    reset_peak()  # what drawing them took is not the grouping's
    out = {"n": n, "search": "exact" if n <= grouping.EXACT_LIMIT else "faiss IVF", "threads": torch.get_num_threads()}
    start = time.perf_counter()
    knn, _ = grouping.neighbours(x, grouping.K1)
    out["neighbours_s"] = time.perf_counter() - start
    out["recall"] = float(np.mean(labels[knn[:, 1:]] == labels[:, None]))
    start = time.perf_counter()
    distance = grouping.jaccard(x, knn)
    out["jaccard_s"] = time.perf_counter() - start
    start = time.perf_counter()
    found = grouping.dbscan(knn, distance, grouping.EPS)
    out["dbscan_s"] = time.perf_counter() - start
    out["total_s"] = out["neighbours_s"] + out["jaccard_s"] + out["dbscan_s"]
    grouped = found >= 0
    main = 0
    if grouped.any():
        order = np.lexsort((labels[grouped], found[grouped]))
        pairs = np.stack([found[grouped][order], labels[grouped][order]], 1)
        _, counts = np.unique(pairs, axis=0, return_counts=True)
        keys = np.unique(pairs, axis=0)[:, 0]
        main = np.maximum.reduceat(counts, np.unique(keys, return_index=True)[1]).sum()
    out["groups"] = int(found.max() + 1)
    out["coverage"] = float(grouped.mean())
    out["purity"] = float(main / max(1, grouped.sum()))
    out["peak_gb"] = resident_peak()
    out["descriptors_gb"] = out_held
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000], help="numbers of descriptors")
    p.add_argument("--per_person", type=int, default=10, help="descriptors of each person drawn")
    p.add_argument("--noise", type=float, default=0.8,
                   help="noise around each person's direction, relative to it (0.8: cosine about 0.6 within a person)")
    p.add_argument("--exact_up_to", type=int, default=100_000, help="also time the exact search up to this size")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        n, exact = int(args.child[0]), args.child[2] == "exact"
        print(json.dumps(one_size(n, args.per_person, args.noise, exact)))
        return
    print(machine(), flush=True)
    rows = []
    for n in args.sizes:
        kinds = (["exact"] if n <= args.exact_up_to else []) + ["faiss"]
        for kind in kinds:
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(n), "-", kind,
                                   "--per_person", str(args.per_person), "--noise", str(args.noise)],
                                  capture_output=True, text=True, cwd=REPO)
            if done.returncode:
                sys.exit(f"error: {n} descriptors ({kind}) failed: {done.stderr.strip().splitlines()[-1:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{r['n']:>9,} {r['search']:<9} neighbours {r['neighbours_s']:7.1f} s  "
                  f"jaccard {r['jaccard_s']:6.1f} s  dbscan {r['dbscan_s']:5.1f} s  total {r['total_s']:7.1f} s  "
                  f"peak {r['peak_gb']:.2f} GB  "
                  f"neighbours of the same person {r['recall']:.3f}  {r['groups']} groups, coverage "
                  f"{r['coverage']:.3f}, purity {r['purity']:.3f}", flush=True)
    print("\n| descriptors | search | neighbours s | Jaccard s | DBSCAN s | total s | peak GB | purity | coverage |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['search']} | {r['neighbours_s']:.1f} | {r['jaccard_s']:.1f} | {r['dbscan_s']:.1f} | "
              f"{r['total_s']:.1f} | {r['peak_gb']:.2f} | {r['purity']:.3f} | {r['coverage']:.3f} |")


if __name__ == "__main__":
    main()
