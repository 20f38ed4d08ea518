"""Own footage to train on: fine-tuning a trained run on annotated footage against training from
scratch for the same epochs (the same time: the same network on the same images), and the run
as it is, measured on people of the footage held out of both.

    bash demo.sh                                   # model/demo, trained on synthetic.py's crops
    python bench/experiments/footage_finetune.py --from_run model/demo

In a temporary folder (--work keeps it):
    synthetic_footage.py    --cameras cameras of --people new people walking past, --frames each
    prepare.py --dataset mot --shared_ids --hold_out N
                            the people seen by two or more cameras, N of them held out as query and
                            gallery (one query per person and camera), the rest cropped to train on
    train_new.py --init_from RUN    fine-tuned: backbone, bottleneck and verification head of the run
    train_new.py --no-pretrained    from scratch, the same recipe and epochs
    test.py, evaluate.py            each, and the run as it is (no training on footage)
"""
import os
import statistics
import tempfile
import time

from bench.stages import REPO, RESULT_LINE, machine, run_stage
from reid import cli
from reid.synthetic import footage as synthetic_footage

# the demo's recipe (demo.sh), at its input size: 32 x 16, P x K batches, lr 0.03, all images
RECIPE = ["--height", "32", "--width", "16", "--lr", "0.03", "--batchsize", "64", "--sampler", "pk", "--instances", "2",
          "--train_all", "--no-channels_last", "--gpu_ids", "-1"]


def measure(name, tree, work, cwd=None):
    """(Rank@1, mAP) of run `name` (in cwd/model/) on the held-out people of `tree`."""
    result = os.path.join(work, f"{os.path.basename(name)}.mat")
    run_stage("test.py", "--name", name, "--test_dir", tree, "--output", result, "--gpu_ids", "-1", cwd=cwd or work)
    found = RESULT_LINE.search(run_stage("evaluate.py", "--result", result, cwd=work))
    return float(found[2]), float(found[5])


def train(name, tree, work, epochs, extra):
    """Train a run; the seconds its epochs took (from its train.log)."""
    run_stage("train_new.py", "--name", name, "--data_dir", tree, "--epochs", str(epochs),
              "--decay_epoch", str(max(1, epochs * 4 // 5)), "--overwrite", *RECIPE, *extra, cwd=work)
    with open(os.path.join(work, "model", name, "train.log")) as f:
        return sum(float(line.rsplit("|", 1)[1].strip().rstrip("s")) for line in f if line.startswith("epoch "))


def main():
    p = cli.parser(__doc__)
    p.add_argument("--from_run", default=os.path.join(REPO, "model", "demo"),
                   help="the trained run folder to fine-tune (model/<name>)")
    p.add_argument("--cameras", default=3, type=int, help="cameras of the synthetic footage")
    p.add_argument("--people", default=60, type=int, help="people walking past them")
    p.add_argument("--frames", default=300, type=int, help="frames per camera")
    p.add_argument("--hold_out", default=20, type=int, help="people held out as query and gallery")
    p.add_argument("--epochs", default=10, type=int, help="epochs of both trainings")
    p.add_argument("--seeds", default=1, type=int, help="training seeds of each (the footage stays the same)")
    p.add_argument("--work", default=None, help="working folder to keep (not given: a temporary one)")
    args = p.parse_args()
    run = os.path.abspath(args.from_run)
    if not os.path.isfile(os.path.join(run, "opts.yaml")):
        raise SystemExit(f"error: --from_run {args.from_run} is not a trained run (no opts.yaml); "
                         f"run bash demo.sh first")
    print(machine())

    with tempfile.TemporaryDirectory() as temporary:
        work = os.path.abspath(args.work or temporary)
        footage = os.path.join(work, "footage")
        start = time.perf_counter()
        synthetic_footage.make_footage(footage, cameras=args.cameras, people=args.people, frames=args.frames,
                                       fps=10, seed=1, video=False)
        tree = os.path.join(work, "tree")
        printed = run_stage("prepare.py", "--dataset", "mot", "--download_path", footage, "--output", tree,
                            "--shared_ids", "--hold_out", str(args.hold_out), "--mot_stride", "3", "--seed", "0",
                            cwd=work)
        print(f"footage: {args.cameras} cameras x {args.frames} frames, {args.people} people "
              f"({time.perf_counter() - start:.0f} s to draw and prepare):")
        print("\n".join("  " + line.strip() for line in printed.splitlines() if "images" in line))
        rows = [("the run as it is", "-", "-", *measure(os.path.basename(run), tree, work, cwd=os.path.dirname(
            os.path.dirname(run))))]
        for seed in range(args.seeds):
            for name, label, extra in (("finetuned", "fine-tuned (--init_from)", ["--init_from", run]),
                                       ("scratch", "from scratch", ["--no-pretrained"])):
                name = f"{name}_s{seed}"
                seconds = train(name, tree, work, args.epochs, extra + ["--seed", str(seed)])
                rows.append((label, seed, f"{seconds:.0f}", *measure(name, tree, work)))
                print(f"  {label}, seed {seed}: {seconds:.0f} s of training, Rank@1 {rows[-1][3]:.3f} mAP "
                      f"{rows[-1][4]:.3f}", flush=True)
    print(f"\n| run | seed | training (s, {args.epochs} epochs) | Rank@1 | mAP |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]:.3f} | {row[4]:.3f} |")
    for label in ("fine-tuned (--init_from)", "from scratch"):
        done = [r for r in rows if r[0] == label]
        if len(done) > 1:
            print(f"{label}: Rank@1 {statistics.mean(r[3] for r in done):.3f} "
                  f"± {statistics.stdev(r[3] for r in done):.3f}"
                  f", mAP {statistics.mean(r[4] for r in done):.3f} ± {statistics.stdev(r[4] for r in done):.3f}")


if __name__ == "__main__":
    main()
