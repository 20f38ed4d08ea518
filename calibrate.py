"""Calibrate a trained run on people it never trained on: the same-person probability and the
same/different thresholds that search.py and evaluate.py use (model/<name>/thresholds.yaml),
fitted on the calibration/ split of a prepared tree (prepare.py --calibration M).

    python prepare.py --download_path ../Market --calibration 50 --output ../Market/pytorch_cal
    python calibrate.py --name ft_ResNet50 --data_dir ../Market/pytorch_cal

For runs trained before calibrations were fitted, runs of the original code (they saved no
verification head: P(same) then comes from cosine similarity alone), or to calibrate on other
people than training did. Every cross-camera pair of calibration/'s images is used once; the
thresholds.yaml written replaces the run's, for --which_epoch.

The identities must not have been trained on: when the run's training tree (its opts.yaml's
data_dir) is at hand, identities it trained on stop the calibration.
"""
import os

import torch

from model import check_precision, descriptors, load_head, load_trained
from reid import cli
from reid.cli import UserError
from reid.devices import Arithmetic, choose_device, loader_workers, note_emulated
from reid.evaluation.metrics import Side
from reid.evaluation.verification import FARS, calibrate_on_people, calibration_images, save_thresholds
from reid.runs import run_dir


def trained_identities(opts):
    """The identity folders the run trained on, where its training tree is still at hand; else None."""
    folder = os.path.join(str(opts.get("data_dir", "")), "train_all" if opts.get("train_all") else "train")
    return set(os.listdir(folder)) if os.path.isdir(folder) else None


def main(argv=None):
    p = cli.parser(__doc__)
    cli.add_run_flags(p, "to calibrate")
    cli.add_device_flags(p, "run")
    p.add_argument("--data_dir", default="../Market/pytorch",
                   help="a tree written by prepare.py --calibration, holding calibration/")
    p.add_argument("--batchsize", default=256, type=int, help="images per forward pass")
    args = p.parse_args(argv)
    device = choose_device(args.gpu_ids)
    args.num_workers = loader_workers(args.num_workers, device)
    note_emulated(device, args.precision)

    folder = run_dir(args.name)
    model, opts = load_trained(folder, args.which_epoch)
    calibration = calibration_images(args.data_dir, int(opts["height"]), int(opts["width"]), args.batchsize,
                                     args.num_workers)
    if calibration is None:
        raise UserError(f"{os.path.join(args.data_dir, 'calibration')} does not exist; prepare a tree with people the "
                        "run never trained on: python prepare.py --download_path <dataset> --calibration 50 --output "
                        "<tree>, then pass --data_dir <tree>")
    loader, ids, cams = calibration
    trained = trained_identities(opts)
    overlap = sorted(trained & set(os.listdir(os.path.join(args.data_dir, "calibration")))) if trained else []
    if overlap:
        raise UserError(f"{len(overlap)} identities of {os.path.join(args.data_dir, 'calibration')} were trained on by "
                        f"{args.name} ({cli.shorten(overlap)}), which would make P(same) and the thresholds "
                        "optimistic; calibrate on people it never saw (prepare.py --calibration holds them out before "
                        "training)")
    model = model.to(device, memory_format=torch.channels_last).eval()
    precision = check_precision(Arithmetic(device, args.precision), model, loader.dataset,
                                "calibration images")
    f = descriptors(model, loader, device, "calibration", precision)
    found = calibrate_on_people(Side(f, ids, cams), load_head(folder, args.which_epoch), args.which_epoch)
    save_thresholds(folder, found)
    scores = [s for s in ("cosine", "head") if s in found]
    print(f"wrote {os.path.abspath(os.path.join(folder, 'thresholds.yaml'))} for net_{args.which_epoch}.pth, from "
          f"{found['pairs']}; prior {found['prior']:.4g}; thresholds at FAR {', '.join(f'{f:g}' for f in FARS)}: "
          + "; ".join(f"{s} " + ", ".join(f"{t:.4f}" for t in found[s].values()) for s in scores))


if __name__ == "__main__":
    cli.run_main(main)
