"""Where a training run lives and how its files are written and read.

model/<name>/
    opts.yaml       every training option plus nclasses; test.py rebuilds the network from it alone
    net_<e>.pth     state_dict of the network after epoch e (0-based, every 10 epochs: 9, 19, ...)
    net_last.pth    state_dict after the last epoch
    state.pth       everything needed to resume training (train_new.py --resume): network,
                    verification head, optimizer, schedule, epoch and step, RNG state, curves
    train.png       loss and top-1 error per epoch (train and val), val retrieval Rank@1 and mAP
    train.log       one line per epoch
    <name>.onnx     the feature extractor for a service (export.py; <name>_noflip.onnx with --no-flip)

Every file is written to a temporary name in the same folder and renamed,
so a killed process never leaves half a file behind under the real name.
"""
import contextlib
import os
import pickle
import sys
import tempfile

import numpy as np
import torch
import yaml

MODEL_ROOT = "model"
STATE = "state.pth"


def run_dir(name):
    return os.path.join(MODEL_ROOT, name)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    # mkstemp makes the file private (0600); the result should get the permissions of a plain open()
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_opts(folder, opts):
    with atomic_path(os.path.join(folder, "opts.yaml")) as tmp:
        with open(tmp, "w") as f:
            yaml.safe_dump(opts, f, default_flow_style=False)


def load_opts(folder):
    path = os.path.join(folder, "opts.yaml")
    if not os.path.isfile(path):
        sys.exit(f"error: {path} not found; check --name (runs are folders under {MODEL_ROOT}/) or train first")
    try:
        with open(path) as f:
            opts = yaml.safe_load(f)
    except yaml.YAMLError as e:
        sys.exit(f"error: {path} is not valid YAML ({e}); restore it from the run or retrain")
    if not isinstance(opts, dict) or "nclasses" not in opts:
        sys.exit(f"error: {path} does not hold the options of a train_new.py run (no nclasses); restore it or retrain")
    return opts


def checkpoint_path(folder, epoch):
    return os.path.join(folder, f"net_{epoch}.pth")


def save_checkpoint(path, state_dict):
    with atomic_path(path) as tmp:
        torch.save(state_dict, tmp)


def load_file(path, fix):
    """torch.load without running pickled code; a bad file ends the script with one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        sys.exit(f"error: {path} needs arbitrary code to load ({str(e).splitlines()[0]}); refused, as it could "
                 f"run anything: {fix}")
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        sys.exit(f"error: cannot load {path} ({str(e).splitlines()[0]}); it is truncated or not a checkpoint: {fix}")


def load_checkpoint(folder, epoch):
    """The state_dict saved after `epoch` ('last' or a number)."""
    path = checkpoint_path(folder, epoch)
    if not os.path.isfile(path):
        saved = sorted((f[4:-4] for f in os.listdir(folder) if f.startswith("net_") and f.endswith(".pth")),
                       key=lambda e: (not e.isdigit(), int(e) if e.isdigit() else 0))
        sys.exit(f"error: {path} not found; --which_epoch can be one of: {', '.join(saved) or 'none saved yet'}")
    return load_file(path, "choose another --which_epoch")


def run_files(folder):
    """The files of a run in its folder (those train_new.py writes), for --overwrite."""
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder))
            if f in ("opts.yaml", STATE, "train.log", "train.png") or (f.startswith("net_") and f.endswith(".pth"))]


def choose_device(gpu_ids):
    """torch.device for --gpu_ids ('0', '0,1' or '-1'); the CPU when -1 or when CUDA is absent."""
    try:
        ids = [int(i) for i in str(gpu_ids).split(",") if i.strip() != ""]
    except ValueError:
        sys.exit(f"error: --gpu_ids {gpu_ids!r} is not a comma-separated list of integers (use 0, 0,1 or -1 for the CPU)")
    ids = [i for i in ids if i >= 0]
    if not ids:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        print(f"note: --gpu_ids {gpu_ids} asked for CUDA, which is not available here; running on the CPU", file=sys.stderr)
        return torch.device("cpu")
    if len(ids) > 1:
        print(f"note: using GPU {ids[0]} only; this version trains on one device", file=sys.stderr)
    if ids[0] >= torch.cuda.device_count():
        sys.exit(f"error: --gpu_ids {ids[0]} but this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device("cuda", ids[0])


class Shard:
    """This process's part of the work under torchrun (the whole of it otherwise)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def main(self):
        return self.rank == 0

    def take(self, items):
        """This process's contiguous slice of `items` (all of it in a single process)."""
        return items[self.rank * len(items) // self.world:(self.rank + 1) * len(items) // self.world]

    def gather(self, array):
        """The processes' arrays concatenated in rank order, in the main process (None elsewhere)."""
        if self.world == 1:
            return array
        parts = [None] * self.world
        torch.distributed.all_gather_object(parts, array)
        return np.concatenate(parts) if self.main else None

    def finish(self):
        if self.world > 1:
            torch.distributed.destroy_process_group()


def start_processes(gpu_ids):
    """(shard, device). Under torchrun each process joins the group (NCCL on GPUs, gloo on CPUs)
    and uses the GPU of its local rank; otherwise --gpu_ids decides (choose_device)."""
    shard = Shard()
    if shard.world == 1:
        return shard, choose_device(gpu_ids)
    cuda = torch.cuda.is_available() and str(gpu_ids).strip() != "-1"
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", shard.local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return shard, device
