"""Where the arithmetic runs: the device --gpu_ids names, reduced precision, and the
processes of a torchrun launch, each doing its share (train_new.py, test.py, search.py).
"""
import os
import re
import sys

import numpy as np
import torch
from tqdm import tqdm

from reid.cli import UserError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# The /proc/cpuinfo flags of the instructions a CPU computes bf16 or fp16 with. Without them PyTorch
# emulates the format, and autocast slows the network down instead: on an AVX2-only CPU a bf16
# training step ran 12 times slower than fp32 (docs/benchmarks.md, M9).
CPU_INSTRUCTIONS = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}


def autocast(device, precision):
    """The context the network runs in: bf16 or fp16 through autocast, plain fp32 otherwise."""
    return torch.autocast(device.type, dtype=PRECISIONS[precision], enabled=precision != "fp32")


def cpu_info(cpuinfo="/proc/cpuinfo"):
    """The CPU's model name and the set of its flags (instruction sets), from /proc/cpuinfo;
    (None, None) where the system has none."""
    try:
        with open(cpuinfo) as f:
            info = f.read()
    except OSError:
        return None, None
    model = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", info, re.M)
    return (model[1] if model else None), set(flags[1].split() if flags else ())


def native(device, precision, cpuinfo="/proc/cpuinfo"):
    """Whether `device` computes `precision` with instructions of its own: fp32 always; on a GPU,
    fp16 always and bf16 where CUDA says so; on a CPU, when its flags name the instructions (a
    system without /proc/cpuinfo is given the benefit of the doubt)."""
    if precision == "fp32":
        return True
    if device.type == "cuda":
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    flags = cpu_info(cpuinfo)[1]
    return flags is None or not flags.isdisjoint(CPU_INSTRUCTIONS[precision])


def note_emulated(device, precision):
    """One line on stderr when --precision asks for arithmetic the device can only emulate."""
    if not native(device, precision):
        print(f"note: --precision {precision}: this CPU has no {precision} instructions "
              f"({' or '.join(CPU_INSTRUCTIONS[precision])}), so PyTorch emulates them, slower than fp32 (a bf16 "
              f"training step ran 12x slower on an AVX2-only CPU: docs/benchmarks.md); pass --precision fp32",
              file=sys.stderr)


# Reduced precision is trusted where, on a few of the run's own images, every descriptor is within
# these cosines of fp32's and of its own on a second call. Where bf16 is sound they agree to 0.99998
# and repeat exactly (ResNet-50 at 64 x 32 and 256 x 128, AVX2 CPU, docs/benchmarks.md); on an Intel
# CPU with AMX they agreed to 0.951-0.983 and changed from call to call (issue 40).
AGREE_FP32, AGREE_REPEAT = 0.99, 0.999
# images the check runs on (with their flips, one batch)
CHECK_IMAGES = 8


class Arithmetic:
    """The precision a script runs its network in: --precision until it proves wrong on this
    device, fp32 from then on, said once on stderr. Reduced precision proves wrong when its
    descriptors disagree with fp32's (check) or a training step's loss is not finite under it
    while fp32's is (train_new.py)."""

    def __init__(self, device, precision):
        self.device, self.precision = device, precision

    @property
    def reduced(self):
        return self.precision != "fp32"

    def autocast(self):
        return autocast(self.device, self.precision)

    def fall_back(self, why, say=True):
        if say:  # above a progress bar where one is drawn (a training step fell back)
            tqdm.write(f"note: {why}: running in fp32 from here (--precision fp32 does so from the start; "
                       f"docs/benchmarks.md, \"Reduced precision\")", file=sys.stderr)
        self.precision = "fp32"

    @torch.inference_mode()
    def check(self, describe, images, what, shard=None):
        """Describe `images` (describe: images -> L2-normalised descriptors) in fp32 and twice in
        this precision; keep the precision where every descriptor agrees with fp32's and with itself
        (AGREE_FP32, AGREE_REPEAT), else fall back to fp32. Under torchrun every process checks, all
        fall back if one does, and the main process speaks. Says the outcome in one line; returns
        the precision (model.check_precision runs it on the network, in reduced precision only)."""
        reference = describe(images).float()
        with self.autocast():
            first, second = describe(images).float(), describe(images).float()
        # a NaN descriptor counts as the worst disagreement
        to_fp32 = torch.minimum((first * reference).sum(1), (second * reference).sum(1)).nan_to_num(-1).min().item()
        repeat = (first * second).sum(1).nan_to_num(-1).min().item()
        agree = to_fp32 >= AGREE_FP32 and repeat >= AGREE_REPEAT
        found = (f"on {len(images)} {what}, {self.precision} descriptors are within cosine {to_fp32:.5f} of fp32's and "
                 f"{repeat:.5f} of a second call's (at least {AGREE_FP32} and {AGREE_REPEAT} needed)")
        several = shard is not None and shard.world > 1
        everyone = shard.everyone(agree, self.device) if several else agree
        say = not several or shard.main
        if everyone and say:
            print(f"{self.precision} checked: {found}")
        elif not everyone:
            where = cpu_info()[0] if self.device.type == "cpu" else torch.cuda.get_device_name(self.device)
            self.fall_back(f"--precision {self.precision} is wrong on this {self.device.type} ({where or 'unknown'}): "
                           + (found if not agree else "another process found its descriptors disagreeing"),
                           say=say or not agree)
        return self.precision


def choose_device(gpu_ids):
    """torch.device for --gpu_ids ('0', '0,1' or '-1'; None when not given: GPU 0 if there is
    one); the CPU when -1 or when CUDA is absent."""
    given = gpu_ids is not None
    try:
        ids = [int(i) for i in str(gpu_ids if given else "0").split(",") if i.strip() != ""]
    except ValueError:
        raise UserError(f"--gpu_ids {gpu_ids!r} is not a comma-separated list of integers (use 0, 0,1 or -1 for the "
                        "CPU)") from None
    ids = [i for i in ids if i >= 0]
    if not ids:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        print(f"note: --gpu_ids {gpu_ids} asked for CUDA, which is not available here; running on the CPU" if given
              else "note: no CUDA GPU here; running on the CPU", file=sys.stderr)
        return torch.device("cpu")
    if len(ids) > 1:
        print(f"note: using GPU {ids[0]} only; for several GPUs, launch with torchrun", file=sys.stderr)
    if ids[0] >= torch.cuda.device_count():
        raise UserError(f"--gpu_ids {ids[0]} but this machine has {torch.cuda.device_count()} GPU(s)")
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
        shared = self.share(array)
        return shared if self.main else None

    def share(self, array):
        """The processes' arrays concatenated in rank order, in every process."""
        if self.world == 1:
            return array
        parts = [None] * self.world
        torch.distributed.all_gather_object(parts, array)
        return np.concatenate(parts)

    def broadcast(self, value):
        """The main process's `value`, in every process (what the others pass is not used)."""
        if self.world == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def everyone(self, flag, device):
        """Whether `flag` is true in every process."""
        agreed = torch.tensor([float(flag)], device=device)
        torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MIN)
        return bool(agreed.item())

    def finish(self):
        if self.world > 1:
            torch.distributed.destroy_process_group()


def loader_workers(given, device):
    """--num_workers as given, or when not given: none on a CPU, where worker processes take the
    cores the network's threads compute on (on 2 cores, 1.2x the training steps a second of 2
    workers, 1.35x those of 1: docs/benchmarks.md), and min(8, cores) beside a GPU."""
    if given is not None:
        return given
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0


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


def check_in_sync(net, shard):
    """DistributedDataParallel keeps every process's weights equal; say so, or stop if not."""
    fingerprint = torch.stack([p.detach().double().sum() for p in net.parameters()])
    everyone = [torch.zeros_like(fingerprint) for _ in range(shard.world)]
    torch.distributed.all_gather(everyone, fingerprint)
    if shard.main:
        if not all(torch.equal(f, everyone[0]) for f in everyone):
            raise UserError(f"the weights of the {shard.world} processes differ at the end of training")
        print(f"weights identical on all {shard.world} processes")
