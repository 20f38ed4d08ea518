"""Stage 3: extract the descriptor of every gallery and query image with a
trained run and write them to pytorch_result.mat (layout in data.py), which
evaluate.py reads next. The network is rebuilt from model/<name>/opts.yaml.
Under torchrun the images are split across the processes and gathered in order.

Descriptor = normalised feature of the image + that of its horizontal flip,
L2-normalised again. For runs that saved their verification head (verif_<epoch>.pth),
the head's weights go into the file too (verif_w, verif_b), so that evaluate.py can
also judge pairs with it; and so does the run's calibration of P(same) (thresholds.yaml),
so that evaluate.py can tell how well it holds on these pairs.
"""
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from model import check_precision, descriptors, load_head, load_trained
from reid import cli
from reid.data import image_folder, parse_names, save_features, test_transform
from reid.devices import Arithmetic, loader_workers, note_emulated, start_processes
from reid.evaluation.verification import load_thresholds
from reid.runs import run_dir


def parse_args(argv=None):
    p = cli.parser(__doc__)
    cli.add_run_flags(p, "to test")
    cli.add_device_flags(p, "run")
    p.add_argument("--test_dir", default="../Market/pytorch", help="the pytorch/ folder written by prepare.py")
    p.add_argument("--batchsize", default=256, type=int, help="images per forward pass")
    p.add_argument("--multi", action="store_true", help="also extract multi-query features into multi_query.mat")
    p.add_argument("--output", default="pytorch_result.mat",
                   help="where to write the features (multi_query.mat goes beside it)")
    return p.parse_args(argv)


def extract_split(model, root, split, args, device, transform, shard, precision):
    """Descriptors, labels and cameras of one split, in file order. Under torchrun each process
    extracts its slice and the main process gathers them (None in the others)."""
    folder = image_folder(root, split, "--test_dir", transform)
    labels, cams = parse_names([path for path, _ in folder.samples])
    loader = DataLoader(Subset(folder, shard.take(range(len(folder)))), batch_size=args.batchsize, shuffle=False,
                        num_workers=args.num_workers, pin_memory=device.type == "cuda")
    return shard.gather(descriptors(model, loader, device, split, precision)), labels, cams


def main(argv=None):
    args = parse_args(argv)
    shard, device = start_processes(args.gpu_ids)
    args.num_workers = loader_workers(args.num_workers, device)
    note_emulated(device, args.precision)
    folder = run_dir(args.name)
    model, opts = load_trained(folder, args.which_epoch)
    model = model.to(device, memory_format=torch.channels_last).eval()
    transform = test_transform(opts["height"], opts["width"])
    queries = image_folder(args.test_dir, "query", "--test_dir", transform)
    precision = check_precision(Arithmetic(device, args.precision), model, queries, "query images", shard)

    result = {}
    for split in ("gallery", "query"):
        f, labels, cams = extract_split(model, args.test_dir, split, args, device, transform, shard, precision)
        result.update({f"{split}_f": f, f"{split}_label": labels, f"{split}_cam": cams})
    head = load_head(folder, args.which_epoch)
    if head is not None:  # what evaluate.py needs to score pairs with the verification head
        result.update(verif_w=head[0].reshape(1, -1), verif_b=np.array([[head[1]]], np.float32))
    calibration = load_thresholds(folder)
    calibrated = calibration and calibration.get("checkpoint") == str(args.which_epoch)
    if calibrated:
        # what evaluate.py needs to measure the false-accept rate the run's thresholds reach on these pairs
        fars = [float(k.split("=")[1]) for k in calibration["cosine"]]
        result["threshold_far"] = np.array([fars])
        result["threshold_cosine"] = np.array([list(calibration["cosine"].values())])
        if head is not None and "head" in calibration:
            result["threshold_head"] = np.array([list(calibration["head"].values())])
        result["threshold_unseen"] = np.array([[not calibration.get("identities_trained_on", True)]], np.float64)
    if calibrated and "prior" in calibration:
        # what evaluate.py needs to measure how well P(same) is calibrated on these pairs
        result["calibration_prior"] = np.array([[calibration["prior"]]])
        result["beta_cosine"] = np.array([[calibration["cosine_beta"][k] for k in "abc"]])
        if head is not None and "head_platt" in calibration:
            result["platt_head"] = np.array([[calibration["head_platt"][k] for k in "ab"]])
    if shard.main:
        save_features(args.output, result)
        print(f"wrote {os.path.abspath(args.output)}: {len(result['query_f'])} queries, {len(result['gallery_f'])} "
              "gallery images")

    if args.multi:
        f, labels, cams = extract_split(model, args.test_dir, "multi-query", args, device, transform, shard, precision)
        multi_path = os.path.join(os.path.dirname(args.output), "multi_query.mat")
        if shard.main:
            save_features(multi_path, {"mquery_f": f, "mquery_label": labels, "mquery_cam": cams})
            print(f"wrote {os.path.abspath(multi_path)}: {len(f)} multi-query images")
    shard.finish()


if __name__ == "__main__":
    cli.run_main(main)
