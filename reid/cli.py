"""How the scripts talk to their users: help that shows every default, the flags that
several scripts share (defined once here), short lists in messages, and errors that end
a script with one line instead of a traceback.

Imports nothing heavy: evaluate.py starts with it, and users run that after every experiment.
"""
import argparse
import gc
import os
import sys

PRECISION_CHOICES = ("fp32", "bf16", "fp16")


class UserError(Exception):
    """A problem with the user's files or flags; its message names the file or flag and the fix.
    run_main prints it as one line."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The script's docstring as written, and each flag's default after its help. A flag whose
    default is None (decided at run time) says in its own help what it does when not given."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def parser(description):
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)


def add_run_flags(p, use, which_epoch=True):
    """--name (the run folder model/<name>/) and, for scripts that read a trained run, --which_epoch."""
    p.add_argument("--name", default="ft_ResNet50", help=f"run {use}: the folder model/<name>/")
    if which_epoch:
        p.add_argument("--which_epoch", default="last",
                       help="checkpoint to use: last, or an epoch such as 59 (net_59.pth)")


def add_device_flags(p, work):
    """--gpu_ids, --num_workers and --precision of the scripts that run the network."""
    p.add_argument("--gpu_ids", default=None,
                   help=f"GPU to {work} on, e.g. 0 (not given: GPU 0 where CUDA is available, else the CPU); "
                        f"-1 {work}s on the CPU")
    p.add_argument("--num_workers", default=None, type=int,
                   help="DataLoader worker processes that decode images (0: in the main process; not given: 0 on a "
                        "CPU, where workers slow the network's threads down, min(8, cores) on a GPU)")
    p.add_argument("--precision", default="fp32", choices=PRECISION_CHOICES,
                   help="arithmetic of the network: fp32, or bf16/fp16 through autocast (faster on GPUs; on a "
                        "CPU, measure first with bench/speed/step_speed.py: from 1.8x faster to slower than fp32)")


def add_footage_flags(p, flag):
    """Where footage's boxes of people come from, for the scripts that read footage through `flag`."""
    p.add_argument("--detections", nargs="+", default=None,
                   help=f"MOTChallenge files of the boxes of people in the footage of {flag}, one per footage, in "
                        "its order (not given: a sequence's det/det.txt, else the person detector)")
    p.add_argument("--ground_truth", action="store_true",
                   help="the boxes are ground truth (track ids; conf 0 and other classes left out): a sequence's "
                        "gt/gt.txt instead of its det/det.txt, and the --detections files read as such")
    p.add_argument("--stride", default=1, type=int, help="use every N-th frame of footage (1: every frame)")
    p.add_argument("--detector", default="fasterrcnn_mobilenet_v3_large_fpn",
                   choices=["fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn_v2"],
                   help="torchvision's COCO detector for footage without detections (weights downloaded once)")
    p.add_argument("--min_score", default=0.5, type=float, help="the detector's score below which a box is dropped")


def shorten(items, shown=5):
    """The first `shown` items and how many more, for a message."""
    items = [str(i) for i in items]
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def run_main(main):
    """Run a script's main(). A UserError ends it with one line instead of a traceback (also one
    raised inside a DataLoader worker), and so does a reader that stops early
    (python evaluate.py | head -1), silently."""
    try:
        main()
        # Importing torch leaves about 200,000 objects, which the collection Python runs at exit
        # would walk one by one (a quarter of a second on 2 cores): they live until then anyway.
        gc.freeze()
    except UserError as e:
        # re-raised from a DataLoader worker, the message holds the worker's traceback: ours is its last line
        last = str(e).strip().splitlines()[-1]
        sys.exit("error: " + last.split(f"{type(e).__name__}: ", 1)[-1])
    except BrokenPipeError:
        # what the Python docs advise: point stdout at devnull so that the exit flush cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
