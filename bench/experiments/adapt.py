"""New cameras without labels: a run trained on one dataset, adapted by adapt.py to another
dataset's unlabelled training images, against the same run as it is (direct transfer) and
fine-tuned with the target's labels (train_new.py --init_from: the upper bound), all scored on
identities held out of the target.

    python bench/experiments/adapt.py --source data/real_market_e8/model/recipe_s0 --target_data ../shared/data/cuhk03
    python bench/experiments/adapt.py --source ... --target_data ... --seeds 0 1 2 --tag=-k20 -- --k1 20   # a variant

--target_data is a raw folder with bounding_box_train/ (Market-1501's naming). prepare.py --hold_out
100 --seed 0 turns it into <work>/target_h100: the held-out people are query and gallery, never
adapted or trained on. For adapt.py the other images (train_all/) are linked into one folder per
camera under names made of a hash of the path, so that no label can reach it; the labels are read
only to score. Each configuration is one run under <work>/model/; a finished one is not run again.
Each prints a row: Rank@1, mAP, the same once each camera's mean descriptor is removed at test time
(no label needed: what adaptation should beat), and minutes of adaptation or training on this machine.
"""
import hashlib
import os
import sys
import time

import numpy as np

from bench.stages import RESULT_LINE, machine, run_stage
from reid import cli
from reid.data import image_folder, load_features, parse_names
from reid.evaluation.metrics import Side, rank_queries, summarize


def camera_folders(tree, work):
    """Folders <work>/cameras/c<camera>/ of links to the tree's train_all images, named by a hash of the path."""
    root = os.path.join(work, "cameras")
    if not os.path.isdir(root):
        samples = image_folder(tree, "train_all", "--target_data").samples
        _, cams = parse_names([p for p, _ in samples])
        for (path, _), cam in zip(samples, cams):
            folder = os.path.join(root, f"c{cam}")
            os.makedirs(folder, exist_ok=True)
            name = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:16] + os.path.splitext(path)[1]
            os.symlink(os.path.abspath(path), os.path.join(folder, name))
    return sorted(os.path.join(root, c) for c in os.listdir(root))


def score(run, tree, work, result):
    """(Rank@1, mAP) of a run on the held-out people of the tree; its features in `result`."""
    if not os.path.isfile(result):
        run_stage("test.py", "--name", os.path.abspath(run), "--test_dir", tree, "--output", result, cwd=work)
    found = RESULT_LINE.search(run_stage("evaluate.py", "--result", result, cwd=work))
    return float(found[2]), float(found[5])


def centred_score(result):
    """(Rank@1, mAP) of a result file once each camera's mean descriptor (over its query and gallery
    images) is taken from its images' descriptors: a test-time correction any run can have, which
    needs cameras but no label, to compare adaptation with."""
    arrays = load_features(result, [f"{s}_{k}" for s in ("query", "gallery") for k in ("f", "label", "cam")])
    query, gallery = Side.of(arrays, "query"), Side.of(arrays, "gallery")
    features = np.concatenate([query.features, gallery.features]).astype(np.float64)
    cameras = np.concatenate([query.cameras, gallery.cameras])
    for c in np.unique(cameras):
        features[cameras == c] -= features[cameras == c].mean(0)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    n = len(query)
    found = summarize(rank_queries(Side(features[:n], query.ids, query.cameras),
                                   Side(features[n:], gallery.ids, gallery.cameras)))
    return found["Rank@1"], found["mAP"]


def grouping_quality(run):
    """Per round of an adapted run: (groups, images grouped, left out, purity), its groups.npz scored
    by the identities of the images its links point to (the share of grouped images that are their
    group's main person)."""
    with np.load(os.path.join(run, "groups.npz"), allow_pickle=False) as saved:
        images = saved["images"].tolist()
        rounds = {int(k[6:]): saved[k] for k in saved.files if k.startswith("round_")}
    ids, _ = parse_names([os.path.realpath(p) for p in images])
    out = []
    for r in sorted(rounds):
        labels = rounds[r]
        grouped = labels >= 0
        pairs, counts = np.unique(np.stack([labels[grouped], ids[grouped]]), axis=1, return_counts=True)
        main = np.zeros(int(labels.max()) + 1, np.int64)
        np.maximum.at(main, pairs[0], counts)
        out.append((r, int(labels.max()) + 1, int(grouped.sum()), int((~grouped).sum()),
                    main.sum() / max(1, grouped.sum())))
    return out


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--source", required=True, help="the trained source run (its folder)")
    p.add_argument("--target_data", required=True, help="raw target dataset folder (bounding_box_train/)")
    p.add_argument("--work", default="data/adapt", help="working folder (prepared tree, camera folders, runs)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of adapt.py and of the fine-tune")
    p.add_argument("--finetune_epochs", type=int, default=6,
                   help="epochs of the labelled fine-tune (about the adaptation's time on the CPU measured here)")
    p.add_argument("--tag", default="",
                   help="added to the adapted runs' names (adapted<tag>_s<seed>), to keep a variant's runs apart; "
                        "adapt.py's flags given after -- make the variant")
    args, adapt_flags = p.parse_known_args(argv)
    adapt_flags = [f for f in adapt_flags if f != "--"]
    work, source = os.path.abspath(args.work), os.path.abspath(args.source)
    # direct_result.mat and the labelled runs are the source's: another source in the same folder would reuse them
    kept = os.path.join(work, "source")
    if os.path.isfile(kept):
        with open(kept) as f:
            recorded = f.read().strip()
        if recorded != source:
            sys.exit(f"error: --work {args.work} holds the runs of another source ({recorded}, as {kept} says), not "
                     f"of --source {args.source}; give another --work for another source")
    os.makedirs(os.path.join(work, "model"), exist_ok=True)
    with open(kept, "w") as f:
        f.write(source + "\n")
    tree = os.path.join(work, "target_h100")
    if not os.path.isdir(tree):
        run_stage("prepare.py", "--download_path", os.path.abspath(args.target_data), "--output", tree,
                  "--hold_out", "100", "--seed", "0", cwd=work)
    cameras = camera_folders(tree, work)
    print(machine(), flush=True)
    direct = os.path.join(work, "direct_result.mat")
    rows = [("direct transfer", 0, *score(source, tree, work, direct), *centred_score(direct), 0.0)]
    print(rows[-1], flush=True)
    for seed in args.seeds:
        for kind in ("adapted", "labelled"):
            name = f"{kind}{args.tag if kind == 'adapted' else ''}_s{seed}"
            run = os.path.join(work, "model", name)
            start = time.time()
            if not os.path.isfile(os.path.join(run, "minutes")):  # written once a run has finished
                # one stopped midway continues (its minutes then count only what is left)
                again = "--resume" if os.path.isfile(os.path.join(run, "rounds.log" if kind == "adapted" else
                                                                   "state.pth")) else "--overwrite"
                if kind == "adapted":
                    run_stage("adapt.py", "--source", source, "--name", name, "--seed",
                              str(seed), again, "--images", *cameras, *adapt_flags, cwd=work, echo="  ")
                else:
                    run_stage("train_new.py", "--name", name, "--init_from", source,
                              "--data_dir", tree, "--train_all", "--sampler", "pk", "--batchsize", "64", "--lr",
                              "0.01", "--epochs", str(args.finetune_epochs), "--decay_epoch",
                              str(args.finetune_epochs + 1), "--seed", str(seed), "--no-pretrained", again,
                              cwd=work, echo="  ")
                with open(os.path.join(run, "minutes"), "w") as f:
                    f.write(f"{(time.time() - start) / 60:.1f}\n")
            with open(os.path.join(run, "minutes")) as f:
                minutes = float(f.read())
            result = os.path.join(run, "target_result.mat")
            rows.append((name.rsplit("_s", 1)[0], seed, *score(run, tree, work, result), *centred_score(result),
                         minutes))
            print(rows[-1], flush=True)
            if kind == "adapted":
                for r, groups, grouped, left, purity in grouping_quality(run):
                    print(f"  round {r}: {groups} groups of {grouped} images, {left} left out, purity {purity:.3f}")
    print("| configuration | seed | Rank@1 | mAP | cameras' means removed: Rank@1 | mAP | minutes |\n"
          "|---|---|---|---|---|---|---|")
    for kind, seed, r1, m, centred_r1, centred_m, minutes in rows:
        print(f"| {kind} | {seed} | {r1:.3f} | {m:.3f} | {centred_r1:.3f} | {centred_m:.3f} | {minutes:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
