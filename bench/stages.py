"""What the benchmarks share: running the repository's stage scripts in a working folder of
their own (where model/ and relative paths go), and reading the line evaluate.py prints."""
import os
import platform
import subprocess
import sys
import tempfile

from reid.devices import CPU_INSTRUCTIONS, Arithmetic, cpu_info, native
from reid.evaluation.metrics import RESULT_LINE  # noqa: F401  evaluate.py's metrics line, for the benchmarks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def run_stage(script, *args, cwd, echo=None):
    """Run the repository's `script` with this Python in `cwd`; its stdout, or exit naming the
    script and the last line of its error output. With `echo`, each stdout line is also printed
    as it comes, after that prefix: long stages (training) show their progress."""
    with tempfile.TemporaryFile("w+") as errors:  # a file, not a pipe: tqdm's bars would fill a pipe
        process = subprocess.Popen([sys.executable, os.path.join(REPO, script), *args], cwd=cwd, text=True,
                                   stdout=subprocess.PIPE, stderr=errors)
        lines = []
        for line in process.stdout:
            lines.append(line)
            if echo is not None:
                print(echo + line, end="", flush=True)
        process.wait()
        if process.returncode:
            errors.seek(0)
            last = (errors.read().strip().splitlines() or ["no error output"])[-1]
            sys.exit(f"error: {script} failed with exit status {process.returncode}: {last}")
    return "".join(lines)


def machine():
    """The CPU's model, vector extensions (they change CPU timings by 2x and more) and cores."""
    model, flags = cpu_info()
    flags = flags or set()
    vector = ("AVX-512" + (" with bf16" if "avx512_bf16" in flags else "") + (", AMX" if "amx_tile" in flags else "")
              if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "neither AVX2 nor AVX-512")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU: {model or platform.processor()}, {vector}, {cores} cores"


def training_precision(dataset):
    """What a benchmark trains in, said in one line: bf16 where the device computes it with
    instructions of its own and a ResNet-50 of random weights describes the first images of
    `dataset` in bf16 as in fp32, twice alike (model.check_precision); fp32 otherwise."""
    import torch

    from model import check_precision, ft_net
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not native(device, "bf16"):
        print(f"fp32: this CPU has no bf16 instructions ({' or '.join(CPU_INSTRUCTIONS['bf16'])}); PyTorch would "
              f"emulate them, 12x slower than fp32 (docs/benchmarks.md)", flush=True)
        return "fp32"
    torch.manual_seed(0)
    network = ft_net(651, pretrained=False).to(device, memory_format=torch.channels_last)
    return check_precision(Arithmetic(device, "bf16"), network, dataset, "images")
