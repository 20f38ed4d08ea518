"""Kill training hard at random moments and check that nothing is lost.

Trains a small run on synthetic data twice in a temporary folder: once without
interruption, and once killed with SIGKILL at random moments (--kills times),
each time continued with --resume (or, killed before its first state.pth,
started again with --overwrite). Prints how many kills the run survived,
whether its final checkpoint loads, and whether its final weights equal those
of the uninterrupted run.

    python bench/speed/fault_bench.py            # 5 kills, DataLoader workers on
"""
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import torch

from bench.stages import REPO, run_stage
from reid import cli


def main():
    p = cli.parser(__doc__)
    p.add_argument("--kills", type=int, default=5, help="SIGKILLs to deliver before letting the run finish")
    p.add_argument("--epochs", type=int, default=4, help="epochs of the run")
    p.add_argument("--num_workers", type=int, default=2, help="DataLoader workers of the run")
    p.add_argument("--seed", type=int, default=0, help="seed of the moments of the kills")
    args = p.parse_args()
    moments = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="fault_bench_") as work:
        data = os.path.join(work, "Market")
        run_stage("synthetic.py", "--out", data, "--train_ids", "20", "--test_ids", "10", "--images_per_camera", "3",
                  "--height", "64", "--width", "32", cwd=work)
        run_stage("prepare.py", "--download_path", data, cwd=work)
        train = ["--gpu_ids", "-1", "--data_dir", os.path.join(data, "pytorch"), "--batchsize", "16", "--height", "64",
                 "--width", "32", "--no-pretrained", "--lr", "0.02", "--epochs", str(args.epochs),
                 "--num_workers", str(args.num_workers)]

        start = time.perf_counter()
        run_stage("train_new.py", *train, "--name", "reference", cwd=work)
        duration = time.perf_counter() - start
        print(f"uninterrupted run: {duration:.1f} s for {args.epochs} epochs")

        survived = restarts = kills = 0
        state = os.path.join(work, "model", "faulty", "state.pth")
        while True:
            resume = ["--resume"] if os.path.exists(state) else ["--overwrite"]
            restarts += resume == ["--overwrite"] and kills > 0
            proc = subprocess.Popen([sys.executable, os.path.join(REPO, "train_new.py"), *train, "--name", "faulty",
                                     *resume], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            # anywhere in the first half of a run: during start-up, mid-epoch, or while writing files
            delay = moments.uniform(1.0, duration / 2) if kills < args.kills else None
            try:
                _, err = proc.communicate(timeout=delay)
                if proc.returncode:
                    sys.exit(f"a resumed run failed: {err.strip().splitlines()[-1]}")
                break
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            kills += 1
            try:
                where = f"state.pth at epoch {torch.load(state, weights_only=True)['epoch']}" if os.path.exists(state) \
                    else "no state.pth yet"
                survived += 1
            except (RuntimeError, EOFError, OSError) as e:
                where = f"state.pth BROKEN ({e})"
            print(f"kill {kills}: SIGKILL after {delay:.1f} s; {where}")

        final = os.path.join(work, "model", "faulty", "net_last.pth")
        reference = torch.load(os.path.join(work, "model", "reference", "net_last.pth"), weights_only=True)
        try:
            weights = torch.load(final, weights_only=True)
            loads = True
        except (RuntimeError, EOFError, OSError):
            weights, loads = {}, False
        same = (loads and weights.keys() == reference.keys()
                and all(torch.equal(weights[k], reference[k]) for k in weights))
        print(f"survived {survived} of {kills} kills ({restarts} restarted from scratch: killed before the first "
              f"state.pth); final checkpoint loads: {loads}; final weights equal the uninterrupted run's: {same}")


if __name__ == "__main__":
    main()
