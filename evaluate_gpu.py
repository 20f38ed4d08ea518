"""evaluate.py with the arithmetic on CUDA (on the CPU where there is no GPU): the same as
python evaluate.py --device cuda. Same protocol, same flags, same numbers."""
import os
import sys

if __name__ == "__main__":
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "evaluate.py")
    os.execv(sys.executable, [sys.executable, script, *sys.argv[1:], "--device", "cuda"])
