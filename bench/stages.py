"""What the benchmarks share: running the repository's stage scripts in a working folder of
their own (where model/ and relative paths go), and reading the line evaluate.py prints."""
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# evaluate.py's metrics line (metrics.format_lines), prefixed "multi " for multi-query
RESULT_LINE = re.compile(r"^(multi )?Rank@1:(\S+) Rank@5:(\S+) Rank@10:(\S+) mAP:(\S+)$", re.M)


def run_stage(script, *args, cwd):
    """Run the repository's `script` with this Python in `cwd`; its stdout, or exit naming the
    script and the last line of its error output."""
    out = subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode:
        last = (out.stderr.strip().splitlines() or ["no error output"])[-1]
        sys.exit(f"error: {script} failed with exit status {out.returncode}: {last}")
    return out.stdout
