"""Real people: train on Market-1501's real training images and measure on identities held out
of them, by the repository's own commands; and the paper's claim (identification +
verification beats identification alone) at this scale.

    python bench/experiments/real_market.py --data ../shared/data/market1501          # quick: the recipe, one seed
    python bench/experiments/real_market.py --data ../shared/data/market1501 --full   # the table: hours; resumes
    python bench/experiments/real_market.py --data ../shared/data/market1501 --full --table   # the table so far
    python bench/experiments/real_market.py --data x --full --table --figure docs/real_market_seeds.png  # a picture
    python bench/experiments/real_market.py --data ../shared/data/market1501 --experiment k4 \
        --work data/real_market_k4 \
        -- --instances 4                                                  # an experiment: a name, a folder, a change

--data is the raw folder holding bounding_box_train/ (Market-1501's 12,936 training images of
751 people). prepare.py --hold_out 100 --seed 0 turns it into <work>/market1501_h100: 651
identities to train on, and 100 held out as query (one image per person and camera) and
gallery, never trained on. Then, for each configuration and seed:

    train_new.py (the recipe below, from scratch), test.py, evaluate.py

in <work>, each run in <work>/model/<configuration>_s<seed>/. Each finished run becomes one
row of --results (CSV, by default docs/real_market_runs.csv, which holds every real-image run),
its first column the --experiment it belongs to (recipe by default; another change to the recipe,
given after --, gets a name of its own and a --work of its own). A run of that experiment already
there is not trained again, and one stopped midway (Ctrl-C, a closed session) resumes from its
state.pth. The table of the experiment's means and spreads over the seeds is printed at the
end, with the chance level (random descriptors) of the split, and each configuration's gain
over the recipe (and alpha 1's over alpha 0) against the seeds' spread: Welch's t-test. Each
run is also evaluated with k-reciprocal re-ranking (evaluate.py --rerank), a test-time step the
paper does not take: the rerank_ columns, beside the cosine ranking the target is measured with.

The recipe, chosen by measurement on 2 CPU cores (docs/real_market.md): 64 x 32 images, from
scratch (no ImageNet weights), P x K batches of 32 identities x 2 images, lr 0.03, 30 epochs
with every rate x0.1 after 24, random erasing (p 0.5), alpha 2, bf16 autocast with
channels-last (1.2-1.4x the steps of fp32 on a CPU with AVX-512 bf16; fp32 instead on a CPU
without bf16 instructions, which would emulate it 12x slower, and where bf16's descriptors
disagree with fp32's, as on an Intel CPU with AMX), all training images (--train_all). The configurations
of --full change one thing each: alpha 0 (identification only), alpha 1 (the paper's weight),
and the original's triplet loading (three images per anchor) for the epochs that take the
recipe's time. The experiment 14ep of docs/real_market_runs.csv holds the same table for the
recipe before (14 epochs, alpha 1, no erasing, fp32; its configurations recipe, alpha0, alpha2
and triplet).
"""
import argparse
import csv
import datetime
import os
import re
import statistics
import sys
import time

import numpy as np
import scipy.stats
import torch

from bench.stages import REPO, RESULT_LINE, machine, run_stage, training_precision
from reid import cli
from reid.data import IMAGE_EXTENSIONS, image_folder, parse_names, test_transform
from reid.evaluation.metrics import Side, rank_queries, summarize
from reid.runs import atomic_path
from reid.training.options import parse_args as training_options

RECIPE = {"--height": "64", "--width": "32", "--sampler": "pk", "--instances": "2", "--batchsize": "64",
          "--lr": "0.03", "--epochs": "30", "--decay_epoch": "24", "--alpha": "2", "--erasing_p": "0.5"}
SWITCHES = ["--no-pretrained", "--train_all", "--channels_last"]
# configuration -> what it changes in the recipe. The triplet loader passes three images per
# anchor through the network: at about 1/2.7 of the pk samples/s (docs/benchmarks.md), 11 epochs
# take the time of the recipe's 30.
CONFIGS = {
    "recipe": {},
    "alpha0": {"--alpha": "0"},
    "alpha1": {"--alpha": "1"},
    "triplet": {"--sampler": "triplet", "--epochs": "11", "--decay_epoch": "9"},
}
SPLIT_SEED = 0
# evaluate.py's verification table: "  cosine  <auc> <eer> <tar@1e-2> <tar@1e-3>", then "  head ..."
# (its table of the run's thresholds comes later, in rows of the same shape)
VERIFICATION_ROW = re.compile(r"^  (cosine|head)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", re.M)
HEAD_RESULT = re.compile(r"^ranked by the head: Rank@1:(\d\.\d+) .* mAP:(\d\.\d+)$", re.M)
# train_new.py's line per epoch: "epoch 3/30 | train loss ... id acc <a> verif acc ... <r> samples/s | lr ... | <s>s"
EPOCH_LINE = re.compile(r"^epoch (\d+)/\d+ \|.* id acc ([\d.]+) .* ([\d.]+) samples/s .*\| ([\d.]+)s$", re.M)
# experiment: what a set of runs changed in the recipe (--experiment); config: which of CONFIGS within it
FIELDS = ["experiment", "config", "seed", "alpha", "sampler", "epochs", "train_s", "s_per_epoch", "samples_per_s",
          "fit", "rank1", "rank5", "rank10", "mAP", "cosine_auc", "cosine_eer", "cosine_tar1e-2", "cosine_tar1e-3",
          "head_auc", "head_eer", "head_tar1e-2", "head_tar1e-3", "head_rank1", "head_mAP", "rerank_rank1",
          "rerank_mAP", "machine", "date", "flags"]
TARGET = {"rank1": 0.85, "mAP": 0.70}


def trained_on():
    """The machine the runs train on: the CPU, and the GPU where CUDA has one (train_new.py then trains on GPU 0)."""
    return machine() + (f"; trained on {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")


def arithmetic(tree, extra):
    """The recipe's --precision: bf16 where the machine that trains computes it (a GPU; a CPU with
    AVX-512 bf16 or AMX, where it gives 1.2-1.4x the steps of fp32) and gets it right on the tree's
    first training images (stages.training_precision), fp32 elsewhere (an AVX2-only CPU emulates
    bf16, 12x slower than fp32; an Intel CPU with AMX computed wrong descriptors and NaN losses in
    bf16: docs/benchmarks.md)."""
    given = {training_options(flags("recipe", extra, p)).precision for p in ("fp32", "bf16")}
    if len(given) == 1:
        return given.pop()  # the command line's --precision, which wins over the recipe's
    options = training_options(flags("recipe", extra, "fp32"))
    some = image_folder(tree, "train_all", "--data", test_transform(options.height, options.width))
    return training_precision(some)


def flags(config, extra, precision):
    """train_new.py's flags for a configuration, trained in `precision` (arithmetic()); `extra` (after -- on the
    command line) comes last and wins."""
    options = RECIPE | {"--precision": precision} | CONFIGS[config]
    return [x for pair in options.items() for x in pair] + SWITCHES + extra


def read_rows(path, experiment):
    """Every row of the file. A row written before the experiment column existed belongs to `experiment`,
    the one this command names: such a file held the runs of one experiment, the one its commands named
    (it was their --results), so it reads as it did; its rows get the name when the file is next written."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["experiment"] = row.get("experiment") or experiment
    return rows


def experiment_rows(path, experiment):
    """The rows of one experiment: the runs it has done, its table."""
    return [r for r in read_rows(path, experiment) if r["experiment"] == experiment]


def write_rows(path, rows):
    """The whole file, under a temporary name renamed into place, so that a stop leaves it as it was;
    a row read from a file written before a column was added gets that column blank."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def append_row(path, row):
    """One finished run, appended: a stop loses no finished run. A new file, or one written before a
    column was added, is written whole instead."""
    rows = read_rows(path, row["experiment"])
    if rows and list(rows[0]) == FIELDS:
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, FIELDS, lineterminator="\n").writerow(row)
        return
    write_rows(path, rows + [row])


def prepare(raw, work, hold_out):
    tree = os.path.join(work, f"market1501_h{hold_out}")
    if not os.path.isfile(os.path.join(tree, "split.yaml")):
        run_stage("prepare.py", "--download_path", raw, "--output", tree, "--hold_out", str(hold_out),
                  "--seed", str(SPLIT_SEED), cwd=work)
    return tree


def run_name(config, seed):
    """The run's name: its folder under <work>/model/."""
    return f"{config}_s{seed}"


def features(name):
    """Where test.py writes a run's features, relative to the work folder."""
    return os.path.join("model", name, "pytorch_result.mat")


def train_and_measure(config, seed, tree, work, extra, precision):
    """Train one run (resuming a stopped one), test and evaluate it; its row of the results file."""
    name = run_name(config, seed)
    folder = os.path.join(work, "model", name)
    again = ["--resume"] if os.path.isfile(os.path.join(folder, "state.pth")) else ["--overwrite"]
    print(f"{name}: training{' (resumed)' if again == ['--resume'] else ''} in {folder}", flush=True)
    run_stage("train_new.py", "--name", name, "--data_dir", tree, "--seed", str(seed), *flags(config, extra, precision),
              *again, cwd=work, echo=f"  {name}: ")
    with open(os.path.join(folder, "train.log")) as f:
        epochs = EPOCH_LINE.findall(f.read())
    result = features(name)
    run_stage("test.py", "--name", name, "--test_dir", tree, "--output", result, cwd=work)
    printed = run_stage("evaluate.py", "--result", result, cwd=work)
    _, rank1, rank5, rank10, mean_ap = RESULT_LINE.search(printed).groups()
    verification = {}
    for score, *values in VERIFICATION_ROW.findall(printed):
        # the first row of each score: the thresholds table that follows has rows of the same shape
        verification.setdefault(score, values)
    head = HEAD_RESULT.search(printed)
    rerank_rank1, rerank_map = reranked(work, result)
    options = training_options(flags(config, extra, precision))  # the options as training resolved them
    seconds = [float(s) for _, _, _, s in epochs]
    row = {"config": config, "seed": seed, "alpha": options.alpha, "sampler": options.sampler,
           "epochs": len(epochs), "train_s": f"{sum(seconds):.0f}", "s_per_epoch": f"{statistics.median(seconds):.1f}",
           "samples_per_s": f"{statistics.median(float(r) for _, _, r, _ in epochs):.1f}",
           # the share of its training images the network classified right in its last epoch
           "fit": epochs[-1][1], "rank1": rank1, "rank5": rank5, "rank10": rank10, "mAP": mean_ap,
           "head_rank1": head[1] if head else "", "head_mAP": head[2] if head else "", "rerank_rank1": rerank_rank1,
           "rerank_mAP": rerank_map, "machine": trained_on(),
           "date": datetime.date.today().isoformat(), "flags": " ".join(flags(config, extra, precision))}
    for score in ("cosine", "head"):
        for key, value in zip(("auc", "eer", "tar1e-2", "tar1e-3"), verification.get(score, ("",) * 4)):
            row[f"{score}_{key}"] = value
    return row


def reranked(work, result):
    """Rank@1 and mAP of the run's features ranked by k-reciprocal re-ranking (evaluate.py --rerank, its
    defaults): a test-time step the paper does not take, measured beside its cosine ranking."""
    _, rank1, _, _, mean_ap = RESULT_LINE.search(run_stage("evaluate.py", "--result", result, "--rerank",
                                                           cwd=work)).groups()
    return rank1, mean_ap


def fill_reranked(path, work, experiment):
    """The experiment's rows written before the re-ranked columns get them from their runs' features where
    <work> still holds them (another experiment's runs live in another folder); the file is rewritten only
    if one did."""
    rows = read_rows(path, experiment)
    filled = False
    for row in rows:
        name = run_name(row["config"], row["seed"])
        result = features(name)
        if (row["experiment"] == experiment and not row.get("rerank_rank1")
                and os.path.isfile(os.path.join(work, result))):
            row["rerank_rank1"], row["rerank_mAP"] = reranked(work, result)
            print(f"{name}: re-ranked from its features: Rank@1 {row['rerank_rank1']} "
                  f"mAP {row['rerank_mAP']}", flush=True)
            filled = True
    if filled:
        write_rows(path, rows)


def chance(tree, draws=20):
    """Rank@1 and mAP of random descriptors on the split, averaged over `draws` draws."""
    sides = {}
    for split in ("query", "gallery"):
        paths = [os.path.join(d, n) for d, _, names in os.walk(os.path.join(tree, split)) for n in names
                 if n.lower().endswith(IMAGE_EXTENSIONS)]
        sides[split] = (len(paths), *parse_names(paths))
    rng = np.random.default_rng(0)
    found = []
    for _ in range(draws):
        (nq, ql, qc), (ng, gl, gc) = sides["query"], sides["gallery"]
        qf, gf = rng.standard_normal((nq, 64), np.float32), rng.standard_normal((ng, 64), np.float32)
        found.append(summarize(rank_queries(Side(qf, ql, qc), Side(gf, gl, gc))))
    return {k: statistics.mean(s[k] for s in found) for k in ("Rank@1", "mAP")}, sides["query"][0], sides["gallery"][0]


def spread(values, digits=3):
    """mean ± standard deviation (sample), or the value alone for one run."""
    values = [float(v) for v in values if v != ""]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(rows, configs):
    """The markdown table of means and spreads per configuration."""
    columns = [("Rank@1", "rank1"), ("mAP", "mAP"), ("ROC AUC cos", "cosine_auc"), ("ROC AUC head", "head_auc"),
               ("EER cos", "cosine_eer"), ("EER head", "head_eer"), ("TAR@FAR=1e-3 cos", "cosine_tar1e-3"),
               ("TAR@FAR=1e-3 head", "head_tar1e-3"), ("Rank@1 re-ranked", "rerank_rank1"),
               ("mAP re-ranked", "rerank_mAP")]
    lines = ["| configuration | seeds | " + " | ".join(c for c, _ in columns) + " | training (min) | s/epoch |",
             "|---" * (len(columns) + 4) + "|"]
    for config in configs:
        done = [r for r in rows if r["config"] == config]
        if done:
            lines.append(f"| {config} ({' '.join(f'{k} {v}' for k, v in CONFIGS[config].items()) or 'as above'}) | "
                         f"{len(done)} | " + " | ".join(spread(r.get(key, "") for r in done) for _, key in columns)
                         + f" | {spread((float(r['train_s']) / 60 for r in done), 1)} | "
                           f"{spread((r['s_per_epoch'] for r in done), 1)} |")
    return "\n".join(lines)


def compare(rows, configs):
    """Each configuration against the recipe, and alpha 1 against alpha 0 (the paper's claim): the difference of
    the means of Rank@1 and mAP in points, and Welch's t-test over the seeds (unequal spreads), so that a gain
    reads against the seed-to-seed spread."""
    pairs = [(c, "recipe") for c in configs if c != "recipe"]
    if "alpha1" in configs and "alpha0" in configs:
        pairs.append(("alpha1", "alpha0"))
    lines = []
    for a, b in pairs:
        runs = {c: [r for r in rows if r["config"] == c] for c in (a, b)}
        if min(len(v) for v in runs.values()) < 2:
            continue  # a t-test needs a spread on both sides
        parts = []
        for label, key in (("Rank@1", "rank1"), ("mAP", "mAP")):
            x, y = ([float(r[key]) for r in runs[c]] for c in (a, b))
            t, p = scipy.stats.ttest_ind(x, y, equal_var=False)
            parts.append(f"{label} {100 * (statistics.mean(x) - statistics.mean(y)):+.1f} points "
                         f"(t {t:.2f}, p {p:.2g})")
        lines.append(f"{a} against {b} ({len(runs[a])} + {len(runs[b])} seeds, Welch): " + ", ".join(parts))
    return "\n".join(lines)


def draw_seeds(rows, configs, path):
    """A PNG of each configuration's seeds, Rank@1 and mAP side by side: a dot a seed, a line at their
    mean, the target dashed, so that a gain reads against the seeds' spread at a glance."""
    import matplotlib  # here: only --figure needs it
    matplotlib.use("Agg")  # the picture goes to a file; no screen is needed
    import matplotlib.pyplot as plt
    done = [c for c in configs if any(r["config"] == c for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(1.6 + 1.3 * len(done), 3.4))
    for ax, (label, key) in zip(axes, (("Rank@1", "rank1"), ("mAP", "mAP"))):
        for x, config in enumerate(done):
            values = [float(r[key]) for r in rows if r["config"] == config]
            ax.plot([x] * len(values), values, "o", color="tab:blue", alpha=0.6)
            ax.hlines(statistics.mean(values), x - 0.3, x + 0.3, color="black")
        ax.axhline(TARGET[key], ls="--", lw=1, color="tab:red", label=f"target {TARGET[key]}")
        ax.set_xticks(range(len(done)), ["\n".join([c] + [f"{k} {v}" for k, v in CONFIGS[c].items()]) for c in done],
                      fontsize=7)
        ax.set_title(f"{label}: seeds (dots), mean (line)", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main():
    p = cli.parser(__doc__)
    p.add_argument("--data", required=True, help="the raw Market-1501 folder holding bounding_box_train/")
    p.add_argument("--full", action="store_true", help="every configuration (the alpha and sampler table), not "
                                                        "only the recipe")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds per configuration, 0 to N-1 (not given: 1 in the quick mode, 3 with --full)")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=None,
                   help="the configurations to run (not given: recipe alone, or all with --full)")
    p.add_argument("--table", action="store_true",
                   help="print the table of the experiment's runs --results holds, and run nothing")
    p.add_argument("--figure", default=None,
                   help="also draw each configuration's seeds (Rank@1 and mAP) into this PNG, e.g. "
                        "docs/real_market_seeds.png")
    p.add_argument("--hold_out", type=int, default=100, help="identities held out of training as query and gallery")
    p.add_argument("--work", default=os.path.join(REPO, "data", "real_market_e30"),
                   help="working folder: the prepared tree and model/ with every run")
    p.add_argument("--results", default=os.path.join(REPO, "docs", "real_market_runs.csv"),
                   help="CSV with one row per finished run, of every experiment; the experiment's runs already in "
                        "it are not run again")
    p.add_argument("--experiment", default="recipe",
                   help="the name of this set of runs, written in each row's experiment column: what the flags "
                        "after -- change, e.g. k4 for -- --instances 4 (give it its own --work too); only its "
                        "rows count as done and make the table")
    p.add_argument("train_args", nargs=argparse.REMAINDER,
                   help="after --: train_new.py flags that change the recipe for every run, e.g. -- --height 256 "
                        "--width 128 on a GPU (give such runs their own --experiment and --work)")
    args = p.parse_args()
    extra = [a for a in args.train_args if a != "--"]
    configs = args.configs or (list(CONFIGS) if args.full else ["recipe"])
    seeds = range(args.seeds if args.seeds is not None else 3 if args.full else 1)
    if args.table:
        rows = experiment_rows(args.results, args.experiment)
        if not rows:
            held = dict.fromkeys(r["experiment"] for r in read_rows(args.results, args.experiment))
            print(f"{args.results} holds no run of --experiment {args.experiment}; its experiments: "
                  f"{' '.join(held) or 'none'}")
        report(rows, configs, seeds, args.figure)
        return
    if not os.path.isdir(os.path.join(args.data, "bounding_box_train")):
        sys.exit(f"error: --data {args.data} holds no bounding_box_train/; pass the raw Market-1501 folder "
                 f"(e.g. ../shared/data/market1501)")
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)

    print(trained_on(), flush=True)
    tree = prepare(os.path.abspath(args.data), work, args.hold_out)
    precision = arithmetic(tree, extra)
    print(f"the recipe's arithmetic here: {precision}", flush=True)
    level, n_query, n_gallery = chance(tree)
    fill_reranked(args.results, work, args.experiment)
    print(f"split: {args.hold_out} held-out identities, {n_query} queries, {n_gallery} gallery images; chance level "
          f"Rank@1 {level['Rank@1']:.3f} mAP {level['mAP']:.3f}", flush=True)
    # seed by seed: after each round every configuration has the same number of runs to compare
    for seed in seeds:
        for config in configs:
            done = {(r["config"], r["seed"]) for r in experiment_rows(args.results, args.experiment)}
            if (config, str(seed)) in done:
                continue
            start = time.time()
            row = {"experiment": args.experiment} | train_and_measure(config, seed, tree, work, extra, precision)
            append_row(args.results, row)
            print(f"{run_name(config, seed)}: Rank@1 {float(row['rank1']):.4f} mAP {float(row['mAP']):.4f}, "
                  f"{int(row['epochs'])} epochs in {float(row['train_s']) / 60:.1f} min of training "
                  f"({row['s_per_epoch']} s/epoch); {time.time() - start:.0f} s in all", flush=True)
    report(experiment_rows(args.results, args.experiment), configs, seeds, args.figure)


def report(rows, configs, seeds, figure=None):
    """The table of the finished runs of these configurations and seeds, and where the recipe stands;
    with `figure`, their seeds drawn into it."""
    rows = [r for r in rows if int(r["seed"]) in seeds]
    if figure:
        draw_seeds(rows, configs, figure)
    print(table(rows, configs))
    if compared := compare(rows, configs):
        print(compared)
    recipe = [r for r in rows if r["config"] == "recipe"]
    if recipe:
        means = {k: statistics.mean(float(r[k]) for r in recipe) for k in TARGET}
        print(f"recipe over {len(recipe)} seed(s): Rank@1 {means['rank1']:.3f}, mAP {means['mAP']:.3f} "
              f"(target {TARGET['rank1']} / {TARGET['mAP']}: "
              f"{'met' if all(means[k] >= TARGET[k] for k in TARGET) else 'not met'})")
        reranked = [r for r in recipe if r.get("rerank_rank1")]
        if reranked:
            print(f"the same networks re-ranked (evaluate.py --rerank; not the paper's test), over {len(reranked)} "
                  f"seed(s): Rank@1 {statistics.mean(float(r['rerank_rank1']) for r in reranked):.3f}, "
                  f"mAP {statistics.mean(float(r['rerank_mAP']) for r in reranked):.3f}")


if __name__ == "__main__":
    main()
