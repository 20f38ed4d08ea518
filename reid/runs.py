"""Where a training run lives, how its files are written and read, and its life: refusing to
mix two runs in one folder, saving the full training state, resuming from it, and stopping
cleanly on Ctrl-C or SIGTERM.

model/<name>/
    opts.yaml       every training option plus nclasses; test.py rebuilds the network from it alone
                    (a folder left by the original code's train.py holds only its options: see load_opts)
    net_<e>.pth     state_dict of the network after epoch e (0-based, every 10 epochs: 9, 19, ...)
    net_last.pth    state_dict after the last epoch
    verif_<e>.pth   state_dict of the verification head saved with each net_<e>.pth (verif_last.pth too)
    thresholds.yaml the same/different thresholds calibrated for net_last.pth on held-out pairs
                    (verification.py), for search.py
    state.pth       everything needed to resume training (train_new.py --resume): network,
                    verification head, optimizer, schedule, epoch and step, RNG state, curves
    train.png       loss and top-1 error per epoch (train and val), val retrieval Rank@1 and mAP
    train.log       one line per epoch
    <name>.onnx     the feature extractor for a service (export.py; <name>_noflip.onnx with --no-flip)
    cache/          search.py's gallery descriptors, one file per gallery folder, checkpoint, input
                    size and precision, whatever --output each search writes to
    search/         search.py's answers (its default --output)

Every file is written to a temporary name in the same folder and renamed,
so a killed process never leaves half a file behind under the real name.
"""
import contextlib
import os
import pickle
import signal
import sys
import tempfile

import torch
import yaml

from reid.cli import UserError

MODEL_ROOT = "model"
STATE = "state.pth"
THRESHOLDS = "thresholds.yaml"
SEARCH_CACHE = "cache"
# What the original code's train.py (layumi/Person-reID-verification, every version) writes to
# opts.yaml: its flags, neither the number of classes nor the image size. Its test.py reads PCB and use_dense.
ORIGINAL_OPTIONS = {"PCB", "alpha", "batchsize", "color_jitter", "data_dir", "erasing_p", "gpu_ids", "lr", "name",
                    "train_all", "use_dense"}


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


def is_original_run(opts):
    """Whether opts.yaml was written by the original code's train.py rather than train_new.py."""
    return (isinstance(opts, dict) and "nclasses" not in opts
            and {"PCB", "use_dense"} <= opts.keys() <= ORIGINAL_OPTIONS)


def load_opts(folder):
    """The run's options. Those of the original code come back as written, with original=True
    and its input size, 256 x 128; its number of classes is in the checkpoint (model.load_trained)."""
    path = os.path.join(folder, "opts.yaml")
    if not os.path.isfile(path):
        raise UserError(f"{os.path.abspath(path)} not found; check --name, or train first (runs are folders "
                        f"under {MODEL_ROOT}/ in the current folder: run from the folder that holds {MODEL_ROOT}/, "
                        f"the repository root)")
    try:
        with open(path) as f:
            opts = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML ({e}); restore it from the run or retrain") from None
    if is_original_run(opts):
        return dict(opts, original=True, height=256, width=128)
    if not isinstance(opts, dict) or "nclasses" not in opts:
        raise UserError(f"{path} does not hold the options of a train_new.py run (no nclasses), nor those of the "
                        f"original code's train.py; restore it or retrain")
    return opts


def checkpoint_path(folder, epoch):
    return os.path.join(folder, f"net_{epoch}.pth")


def head_path(folder, epoch):
    return os.path.join(folder, f"verif_{epoch}.pth")


def save_checkpoint(path, state_dict):
    with atomic_path(path) as tmp:
        torch.save(state_dict, tmp)


def load_file(path, fix):
    """torch.load without running pickled code; a bad file ends the script with one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"{path} needs arbitrary code to load ({str(e).splitlines()[0]}); refused, as it could "
                        f"run anything: {fix}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UserError(f"cannot load {path} ({str(e).splitlines()[0]}); it is truncated or not a checkpoint: "
                        f"{fix}") from None


def save_weights(folder, epoch, model, verif):
    """net_<epoch>.pth (the network, as the original saves it) and verif_<epoch>.pth (its head)."""
    save_checkpoint(checkpoint_path(folder, epoch), model.state_dict())
    save_checkpoint(head_path(folder, epoch), verif.state_dict())


def load_checkpoint(folder, epoch):
    """The state_dict saved after `epoch` ('last' or a number)."""
    path = checkpoint_path(folder, epoch)
    if not os.path.isfile(path):
        saved = sorted((f[4:-4] for f in os.listdir(folder) if f.startswith("net_") and f.endswith(".pth")),
                       key=lambda e: (not e.isdigit(), int(e) if e.isdigit() else 0))
        raise UserError(f"{os.path.abspath(path)} not found; --which_epoch can be one of: "
                        f"{', '.join(saved) or 'none saved yet'}")
    return load_file(path, "choose another --which_epoch")


def run_files(folder):
    """The files of a run in its folder (those train_new.py writes), for --overwrite."""
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder))
            if f in ("opts.yaml", STATE, "train.log", "train.png", THRESHOLDS)
            or (f.startswith(("net_", "verif_")) and f.endswith(".pth"))]


def draw_curves(path, history):
    """The loss and its two parts (log scale: from scratch, the first epochs' val loss can be
    thousands of times the train loss), top-1 identity error per epoch, train (and val), like the
    original's train.jpg; and the val retrieval Rank@1 and mAP when there is a val split."""
    import matplotlib  # here: only training draws, and test.py should start fast
    matplotlib.use("Agg")  # the curves go to a file; no screen is needed
    import matplotlib.pyplot as plt

    panels = 3 if history["val"] else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    for phase, colour in (("train", "b"), ("val", "r")):
        if history[phase]:
            epochs = [h["epoch"] for h in history[phase]]
            for key, style in (("loss", "o-"), ("loss_id", "s--"), ("loss_verif", "^:")):
                if key in history[phase][0]:  # runs from before the two parts were logged have the total only
                    axes[0].plot(epochs, [h[key] for h in history[phase]], colour + style, label=f"{phase} {key}")
            axes[1].plot(epochs, [1 - h["id_acc"] for h in history[phase]], colour + "o-", label=phase)
    axes[0].set_yscale("log")
    titles = ["loss = loss_id + loss_verif", "top-1 error"]
    if panels == 3:
        epochs = [h["epoch"] for h in history["val"]]
        for key, style in (("Rank@1", "go-"), ("mAP", "mo-")):
            axes[2].plot(epochs, [h[key] for h in history["val"]], style, label=key)
        titles.append("val retrieval (val queries, train gallery)")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# options that may differ when a run is resumed: they do not change what is trained
RESUMABLE = {"gpu_ids", "num_workers", "resume", "overwrite", "epochs", "state_every", "val_every", "precision",
             "channels_last", "compile"}


def check_run_folder(folder, args, defaults):
    """Refuse to mix two runs in one folder. With --resume, return the saved state after checking
    that the options are the run's own; otherwise None. An option its opts.yaml lacks (one added
    to the script after the run was saved) counts as having its default: what the run trained with."""
    opts_file, state_file = os.path.join(folder, "opts.yaml"), os.path.join(folder, STATE)
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other; choose one")
    if args.resume:
        if not os.path.isfile(state_file):
            if os.path.isfile(opts_file) and load_opts(folder).get("original"):
                raise UserError(f"--resume: {folder} was trained by the original code, which saves no training state "
                                "(only the weights, net_<epoch>.pth), so there is nothing to resume from; its "
                                "checkpoints test and export as they are; to train on, start a new run with another "
                                "--name")
            raise UserError(f"--resume: {os.path.abspath(state_file)} not found, so there is nothing to resume; drop "
                            f"--resume to start a run (add --overwrite if {folder} holds one)")
        saved = load_opts(folder)
        changed = [f"--{k} {saved.get(k, defaults[k])!r} -> {v!r}" for k, v in vars(args).items()
                   if k not in RESUMABLE and saved.get(k, defaults[k]) != v]
        if changed:
            raise UserError(f"--resume continues {folder} with its own options, but these differ: "
                            f"{', '.join(changed)}; pass the same ones, or start a new run with another --name")
        state = load_file(state_file, f"start again with --overwrite, or use a copy of {folder}")
        if state["epoch"] > args.epochs:
            raise UserError(f"{folder} has trained {state['epoch']} epochs already, more than --epochs {args.epochs}")
        return state
    if os.path.isfile(opts_file) and load_opts(folder).get("original"):
        raise UserError(f"{folder} holds a run of the original code (its checkpoints test and export here as they "
                        f"are); train into another --name")
    if os.path.isfile(opts_file) and not args.overwrite:
        raise UserError(f"{folder} already holds a run; pass --resume to continue it, --overwrite to delete it and "
                        f"start again, or choose another --name")
    return None


def save_state(folder, parts, *, epoch, sums, history):
    """Everything a resume needs, written atomically: the state_dict of each of `parts` (network,
    verification head, optimizer, schedule, loss scaler), `epoch` the epoch in progress (0-based),
    `sums` its running totals (None at an epoch boundary), the curves so far and the RNG state."""
    save_checkpoint(os.path.join(folder, STATE), {
        "epoch": epoch, "sums": sums, "history": history, **{k: p.state_dict() for k, p in parts.items()},
        "rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    })


def restore_state(state, parts, device):
    """Load what save_state wrote into `parts`; return (history, epoch, sums)."""
    for key, part in parts.items():
        part.load_state_dict(state[key])
    torch.set_rng_state(state["rng"])
    if device.type == "cuda" and state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["history"], state["epoch"], state["sums"]


class StopRequest:
    """While active, Ctrl-C or SIGTERM sets `signum`: training saves its state at the end of the
    current step and exits. A second Ctrl-C stops at once. The previous handlers come back after."""

    def __enter__(self):
        self.signum = None
        self.previous = {s: signal.signal(s, self.request) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def request(self, signum, frame):
        if self.signum == signal.SIGINT == signum:
            raise KeyboardInterrupt
        self.signum = signum

    def exit(self, folder, where, announce=True):
        if announce:  # under torchrun, the main process speaks for all
            print(f"stopped by {signal.Signals(self.signum).name} {where}; state saved in "
                  f"{os.path.join(folder, STATE)}; continue with the same command and --resume", file=sys.stderr)
        sys.exit(128 + self.signum)


def agree_to_stop(loss, where, stop=None, shard=None, precision="fp32"):
    """After a step: every process must stop at the same step, so under torchrun they agree on a
    loss that is not finite (the script ends, keeping the last good state, and names a reduced
    `precision` as the likely cause) and on a Ctrl-C or SIGTERM received by any of them (True: save
    the state and stop; `stop` then says why)."""
    flags = torch.tensor([float(not torch.isfinite(loss)), float(stop is not None and stop.signum is not None)],
                         device=loss.device)
    if shard is not None and shard.world > 1 and stop is not None:
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    if flags[0] and precision != "fp32":
        # a diverging rate grows the loss over several steps; reduced precision has been seen to break at step 2
        raise UserError(f"the loss became {loss.item()} at {where} under --precision {precision}, the likely cause "
                        "(its arithmetic is wrong on some CPUs: docs/benchmarks.md); the last good state is kept: "
                        f"--resume with --precision fp32, or start again (--overwrite) with it")
    if flags[0]:
        raise UserError(f"the loss became {loss.item()} at {where}; the last good state is kept: lower --lr, "
                        f"then start again (--overwrite) or --resume an earlier run")
    if flags[1] and stop.signum is None:  # another process was asked to stop
        stop.signum = signal.SIGTERM
    return bool(flags[1])
