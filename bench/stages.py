"""What the benchmarks share: running the repository's stage scripts in a working folder of
their own (where model/ and relative paths go), and reading the line evaluate.py prints."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from metrics import RESULT_LINE  # noqa: E402,F401  evaluate.py's metrics line, for the benchmarks


def run_stage(script, *args, cwd):
    """Run the repository's `script` with this Python in `cwd`; its stdout, or exit naming the
    script and the last line of its error output."""
    out = subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode:
        last = (out.stderr.strip().splitlines() or ["no error output"])[-1]
        sys.exit(f"error: {script} failed with exit status {out.returncode}: {last}")
    return out.stdout
