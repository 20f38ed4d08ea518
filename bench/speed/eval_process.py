"""Whole-process evaluation time at Market-1501 size: `python evaluate.py` against a process
running torchreid's Cython ranking and one running the original evaluate.py's per-query loop.

Writes one pytorch_result.mat of Market-1501 size (eval_speed.make_features: 3,368 queries x
19,732 gallery images, 512-d, saved with data.save_features) to a temporary folder; every
process below reads that file, and each is timed from spawn to exit:
    ours       python evaluate.py --result FILE, with this Python (the repo's)
    torchreid  a program run with --torchreid_python that imports no torch: scipy.io.loadmat;
               gallery images of id -1 dropped, as torchreid's Market1501 loader does; the
               distance of torchreid's compute_distance_matrix(metric="cosine"), 1 - q @ g.T of
               L2-normalised features (numpy, float32); then torchreid's compiled evaluate_cy
               (max_rank 50), loaded from its file with importlib, since torchreid/__init__
               imports torch
    original   eval_speed.original_loop on the file read with scipy.io; that loop uses
               torch.mm, so this process imports torch (as the original evaluate.py did)
Rounds are interleaved; the median (and min) of each is reported. Also printed: the CPU's
vector extensions and cores, the load average, the import time of evaluate.py's modules and
the time of its main() (both measured inside a process that imports evaluate), the ratios
ours/torchreid and ours/original against the goals (at most 0.6x and 0.25x), and whether
evaluate.py's Rank@1 and non-interpolated mAP (its second line) agree with torchreid's.

    python bench/speed/eval_process.py --torchreid_python ../torchreid-venv/bin/python

torchreid's compiled evaluation, in a virtualenv of its own so that it brings no second torch
(PyPI's torchreid 0.2.5 ships no rank_cy; pyppbox-torchreid, a torchreid fork, ships it built):
    python3 -m venv ../torchreid-venv
    ../torchreid-venv/bin/pip install numpy scipy
    ../torchreid-venv/bin/pip install --no-deps pyppbox-torchreid==1.4.1.0
A torchreid built from source (rank_cy*.so under its package folder) is found as well.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from bench.speed.eval_speed import SIZES, make_features
from bench.stages import REPO, RESULT_LINE, machine, run_stage
from reid import cli
from reid.data import save_features

GOALS = {"torchreid": 0.6, "original": 0.25}
VENV = "../torchreid-venv"
GET_TORCHREID = (f"python3 -m venv {VENV} && {VENV}/bin/pip install numpy scipy && {VENV}/bin/pip install --no-deps "
                 f"pyppbox-torchreid==1.4.1.0, then pass --torchreid_python {VENV}/bin/python "
                 f"(PyPI's torchreid 0.2.5 has no rank_cy)")

# Run by --torchreid_python: argv[1] is the .mat file, or --probe to print where rank_cy is.
# find_spec of a top-level name locates the package without running its __init__ (which imports torch).
TORCHREID_PROGRAM = r'''
import glob, importlib.util, json, os, sys, time
start = time.perf_counter()
found = []
for name in ("torchreid", "pyppbox_torchreid"):
    spec = importlib.util.find_spec(name)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found += sorted(glob.glob(os.path.join(folder, "**", "rank_cylib", "rank_cy*.so"), recursive=True))
if not found:
    sys.exit("no compiled rank_cy under a torchreid or pyppbox_torchreid package of " + sys.executable)
if sys.argv[1] == "--probe":
    print(found[0])
    sys.exit()
import numpy as np, scipy.io
spec = importlib.util.spec_from_file_location("rank_cy", found[0])
rank_cy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rank_cy)
imported = time.perf_counter()
mat = scipy.io.loadmat(sys.argv[1])
ids = lambda k: mat[k].reshape(-1).astype(np.int64)
keep = ids("gallery_label") != -1
qf, gf = mat["query_f"].astype(np.float32), mat["gallery_f"][keep].astype(np.float32)
ql, qc, gl, gc = ids("query_label"), ids("query_cam"), ids("gallery_label")[keep], ids("gallery_cam")[keep]
loaded = time.perf_counter()
qf /= np.linalg.norm(qf, axis=1, keepdims=True)
gf /= np.linalg.norm(gf, axis=1, keepdims=True)
distmat = 1 - qf @ gf.T
measured = time.perf_counter()
result = rank_cy.evaluate_cy(distmat, ql, gl, qc, gc, 50, False)
done = time.perf_counter()
print(json.dumps({"Rank@1": float(result[0][0]), "mAP": float(result[1]), "imports": imported - start,
                  "load": loaded - imported, "distance": measured - loaded, "evaluate_cy": done - measured,
                  "torch imported": any(m.split(".")[0] == "torch" for m in sys.modules)}))
'''

# Run by the repo's Python: argv[1] the .mat file. Read as the original read it.
LOOP_PROGRAM = r'''
import json, sys
import numpy as np, scipy.io
from bench.speed.eval_speed import original_loop  # imports torch and the repo's metrics
mat = scipy.io.loadmat(sys.argv[1])
ids = lambda k: mat[k].reshape(-1).astype(np.int64)
r = original_loop(mat["query_f"].astype(np.float32), ids("query_label"), ids("query_cam"),
                  mat["gallery_f"].astype(np.float32), ids("gallery_label"), ids("gallery_cam"))
valid = r["first"] >= 0
print(json.dumps({"Rank@1": float(np.mean(r["first"][valid] == 0)), "mAP": float(np.mean(r["ap"][valid]))}))
'''

# Run by the repo's Python: argv[1] the .mat file, argv[2] the repo. evaluate.py's own split of
# its time, without changing it: importing its modules, then main() (load, check, rank, print).
INSIDE_PROGRAM = r'''
import contextlib, io, json, sys, time
sys.path.insert(0, sys.argv[2])
start = time.perf_counter()
import evaluate
imported = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    evaluate.main(["--result", sys.argv[1]])
done = time.perf_counter()
print(json.dumps({"import": imported - start, "main": done - imported,
                  "loaded": {m: m in sys.modules for m in ("torchvision", "torch._dynamo")}}))
'''


def run(cmd, cwd):
    """(seconds from spawn to exit, stdout) of a command, or exit with its last error line."""
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode:
        last = (out.stderr.strip().splitlines() or ["no error output"])[-1]
        sys.exit(f"error: {cmd[0]} {cmd[1]} ... failed with exit status {out.returncode}: {last}")
    return seconds, out.stdout


def timed_ours(path, folder):
    start = time.perf_counter()
    out = run_stage("evaluate.py", "--result", path, cwd=folder)
    seconds = time.perf_counter() - start
    first = RESULT_LINE.search(out)
    standard = re.search(r"^non-interpolated AP.*? mAP:(\S+)", out, re.M)
    return seconds, {"Rank@1": float(first[2]), "mAP trapezoid": float(first[5]), "mAP": float(standard[1])}


def import_breakdown(names=("numpy", "scipy.io", "scipy.sparse", "torch", "torch._dynamo", "torchvision")):
    """Cumulative import time of the heavy modules that `import evaluate` loads, by -X importtime
    (one run); a module nested in another (torch in torchvision, say) counts in both."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import evaluate"], cwd=REPO,
                         capture_output=True, text=True)
    rows = [line.split("|") for line in out.stderr.splitlines() if line.startswith("import time:")]
    found = {r[2].strip(): int(r[1]) / 1e6 for r in rows[1:] if len(r) == 3}
    return ", ".join(f"{name} {found[name]:.2f} s" if name in found else f"{name} not loaded" for name in names)


def spread(values):
    return f"{statistics.median(values):6.2f} s (min {min(values):.2f}, {len(values)} runs)"


def main():
    p = cli.parser(__doc__)
    p.add_argument("--repeats", type=int, default=3,
                   help="timed runs of evaluate.py and of torchreid's process, and of evaluate.py's import/main split")
    p.add_argument("--loop_repeats", type=int, default=1,
                   help="timed runs of the original's loop process (about 17 s each on 2 cores; 0 skips it)")
    p.add_argument("--torchreid_python", default=sys.executable,
                   help="the Python whose site-packages hold torchreid's compiled rank_cy (default: this one)")
    args = p.parse_args()
    if args.repeats < 1 or args.loop_repeats < 0:
        p.error("--repeats must be at least 1 and --loop_repeats at least 0")
    sys.stdout.reconfigure(line_buffering=True)  # progress shows as it comes, in order with errors

    print(machine())
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    torchreid, why = args.torchreid_python, f"{args.torchreid_python} not found"
    if os.path.exists(torchreid):
        probe = subprocess.run([torchreid, "-c", TORCHREID_PROGRAM, "--probe"], capture_output=True, text=True)
        why = (probe.stderr.strip().splitlines() or ["probe failed"])[-1] if probe.returncode else None
    if why:
        print(f"torchreid: skipped ({why}); to get it: {GET_TORCHREID}")
        torchreid = None
    else:
        print(f"torchreid: {torchreid} with {probe.stdout.strip()}")

    times = {"ours": [], "torchreid": [], "original": []}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "pytorch_result.mat")
        qf, ql, qc, gf, gl, gc = make_features(**SIZES["market"])
        save_features(path, {"gallery_f": gf, "gallery_label": gl, "gallery_cam": gc,
                             "query_f": qf, "query_label": ql, "query_cam": qc})
        print(f"features: {len(qf)} queries x {len(gf)} gallery images, {qf.shape[1]}-d, "
              f"{os.path.getsize(path) / 2**20:.0f} MiB .mat")
        del qf, gf

        # Untimed first runs: they fill the page cache with each interpreter's libraries, so that
        # no process is charged for reading them from disk, and give the metrics.
        results = {"ours": timed_ours(path, folder)[1]}
        tr_cmd = [torchreid, "-c", TORCHREID_PROGRAM, path]
        if torchreid:
            results["torchreid"] = json.loads(run(tr_cmd, folder)[1])
        # Interleaved so that a change in the machine's load (other jobs) falls on all alike.
        for r in range(max(args.repeats, args.loop_repeats)):
            if r < args.repeats:
                times["ours"].append(timed_ours(path, folder)[0])
                if torchreid:
                    times["torchreid"].append(run(tr_cmd, folder)[0])
            if r < args.loop_repeats:
                seconds, out = run([sys.executable, "-c", LOOP_PROGRAM, path], folder)
                times["original"].append(seconds)
                results["original"] = json.loads(out)
        inside = [json.loads(run([sys.executable, "-c", INSIDE_PROGRAM, path, REPO], folder)[1])
                  for _ in range(args.repeats)]
        bare = [run([sys.executable, "-c", "pass"], folder)[0] for _ in range(args.repeats)]

    loaded = ", ".join(f"{m} {'loaded' if yes else 'not loaded'}" for m, yes in inside[0]["loaded"].items())
    print(f"import of evaluate.py's modules: {spread([x['import'] for x in inside])} ({loaded}); "
          f"bare interpreter start+exit {statistics.median(bare):.2f} s")
    print(f"cumulative import times (-X importtime, one run): {import_breakdown()}")
    print(f"evaluation inside evaluate.py (main(): load .mat, check, rank, print): "
          f"{spread([x['main'] for x in inside])}")
    print("whole process, spawn to exit:")
    rest = statistics.median(times["ours"]) - statistics.median(x["import"] + x["main"] for x in inside)
    print(f"  ours       python evaluate.py          {spread(times['ours'])}   of which not in imports or main() "
          f"(interpreter start and exit): {rest:.2f} s")
    if torchreid:
        t = results["torchreid"]
        print(f"  torchreid  cosine + evaluate_cy        {spread(times['torchreid'])}   first run inside: imports "
              f"{t['imports']:.2f} s, load {t['load']:.2f} s, distance {t['distance']:.2f} s, evaluate_cy "
              f"{t['evaluate_cy']:.2f} s; torch imported: {t['torch imported']}")
    if times["original"]:
        print(f"  original   per-query loop (with torch) {spread(times['original'])}")
    ours = statistics.median(times["ours"])
    for name, goal in GOALS.items():
        if times[name]:
            ratio = ours / statistics.median(times[name])
            print(f"ours / {name} = {ratio:.2f}x (goal at most {goal}x): {'met' if ratio <= goal else 'NOT met'}")

    o, agree = results["ours"], True
    print(f"evaluate.py: Rank@1 {o['Rank@1']:.6f} mAP {o['mAP trapezoid']:.6f} (trapezoid), "
          f"{o['mAP']:.6f} (non-interpolated)")
    for name, key in (("torchreid", "mAP"), ("original", "mAP trapezoid")):
        if name in results:
            t = results[name]
            # evaluate.py prints 6 decimals, and torchreid sums AP in float32: a few 1e-6 apart is the same
            same = abs(t["Rank@1"] - o["Rank@1"]) <= 1e-6 and abs(t["mAP"] - o[key]) <= 1e-5
            agree &= same
            print(f"{name}: Rank@1 {t['Rank@1']:.6f} mAP {t['mAP']:.6f}; agrees with evaluate.py's "
                  f"{'second' if key == 'mAP' else 'first'} line: {'yes' if same else 'NO'}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not agree:
        sys.exit("error: the metrics disagree")


if __name__ == "__main__":
    main()
