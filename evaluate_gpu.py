"""evaluate.py with the arithmetic on CUDA (on the CPU where there is no GPU).
Same protocol, same flags, same numbers."""
import sys

import torch

import evaluate
from reid.cli import run_main

if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("note: CUDA is not available; evaluating on the CPU", file=sys.stderr)
    run_main(lambda: evaluate.main(device="cuda" if torch.cuda.is_available() else "cpu"))
