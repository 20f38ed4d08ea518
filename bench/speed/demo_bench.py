"""Run demo.sh from scratch in a temporary copy of the repository and print the machine, the
demo's wall time, the peak memory of its largest process, the time of each stage and the
metrics it reached.

    python bench/speed/demo_bench.py            # the demo (minutes)
    python bench/speed/demo_bench.py --tiny     # the tests' tiny version (seconds)
"""
import glob
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from bench.stages import REPO, RESULT_LINE, machine
from reid import cli


def main():
    p = cli.parser(__doc__)
    p.add_argument("--tiny", action="store_true", help="run demo.sh --tiny instead of the full demo")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="demo_bench_") as work:
        for path in glob.glob(os.path.join(REPO, "*.py")) + [os.path.join(REPO, "demo.sh")]:
            shutil.copy(path, work)
        env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        start = time.perf_counter()
        out = subprocess.run(["bash", "demo.sh"] + (["--tiny"] if args.tiny else []), cwd=work, env=env,
                             stdout=subprocess.PIPE, text=True)
        wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"demo.sh failed with exit status {out.returncode}")
    # ru_maxrss of children: the largest resident set of any finished descendant, in KiB on Linux
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(machine())
    print(f"demo{' --tiny' if args.tiny else ''}: wall {wall:.1f} s, peak memory {peak:.0f} MiB (largest process)")
    print(out.stdout.split("== time per stage\n", 1)[-1].rstrip())
    for prefix, r1, r5, r10, mean_ap in RESULT_LINE.findall(out.stdout):
        print(f"  {prefix or 'single '}query: Rank@1 {r1} Rank@5 {r5} Rank@10 {r10} mAP {mean_ap}")


if __name__ == "__main__":
    main()
