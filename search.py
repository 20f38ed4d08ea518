"""Search your own images with a trained run: rank every image of a folder against query images,
and say for each match whether it shows the same person.

    python search.py --name ft_ResNet50 --query suspect.jpg more_queries/ --gallery footage/ --top 10

The gallery is any folder of images, searched recursively: no naming convention, no identity or
camera needed (.jpg, .jpeg, .png, .bmp, .webp, .tif; grayscale, palette, RGBA, CMYK and 16-bit
images are read as RGB, any size is resized to the run's input size, as test.py does). Files
that cannot be decoded are skipped with a warning naming them.

Each query's matches are ranked by cosine similarity of the descriptors (as the paper ranks
them; --rank_by head ranks by the verification head instead). For each match it reports the
cosine similarity, the probability that the two images show the same person, and a
same/different decision. P(same) is the calibration of cosine similarity that train_new.py
fitted on held-out pairs (thresholds.yaml in the run folder; beta calibration, which gives an
exact copy P(same) 1): it means what it says for pairs of which the share --prior is the same
person (by default the share among the pairs it was fitted on). The verification head's P(same)
(the head the paper trained to answer exactly that; a weighted inner product of the two
descriptors, so all pairs cost one matrix product), calibrated too, and its raw output are
reported beside it. The decision is P(same) at least the threshold calibrated there at a
false-accept rate of --far (--threshold overrides it). A run whose thresholds.yaml predates
calibrations reports and decides by the head's raw output; one with neither head nor
thresholds (the original code's) needs --threshold on cosine similarity.

Writes, in --output (model/<name>/search by default):
    results.csv         one row per query and match: query, rank, gallery, cosine, p_same, p_head
                        (the head's calibrated P(same)), p_head_raw (its own output), same (1 or 0),
                        decided_by (the score P(same) comes from), threshold (on P(same))
    <n>_<query>.png     the query, then its matches with their scores; green = judged the same person
and keeps the gallery's descriptors in the run's cache, model/<name>/cache/, one file per gallery
folder, checkpoint, input size and precision, whatever --output and the queries: a second search
of an unchanged gallery extracts only the queries. An image is extracted again when it was added
or changed (its size, times or inode differ), removed images are dropped, and a checkpoint saved
again under the same name replaces the cache: nothing stale is ever used.
"""
import argparse
import csv
import hashlib
import os
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader

import cli
from data import IMAGE_EXTENSIONS, UnreadableImage, is_image, load_image, test_transform
from devices import choose_device
from model import FEATURE_DIM, descriptors, load_head, load_trained
from pictures import draw_ranking
from runs import SEARCH_CACHE, atomic_path, checkpoint_path, head_path, run_dir
from verification import (COLLAPSED_MEDIAN, FARS, beta_logit, head_block, load_thresholds, median_pair_cosine,
                          probability, with_prior)

# Part of every cache key: a change to how descriptors are computed must not reuse old ones.
CACHE_VERSION = 1
COLOURS = {True: "#1a9850", False: "#d73027"}


def parse_args(argv=None):
    p = cli.parser(__doc__)
    cli.add_run_flags(p, "to search with")
    cli.add_device_flags(p, "run")
    p.add_argument("--query", nargs="+", required=True, help="query images, or folders of them (searched recursively)")
    p.add_argument("--gallery", required=True, help="folder of images to search (recursively)")
    p.add_argument("--top", default=10, type=int, help="matches to report per query")
    p.add_argument("--output", default=None,
                   help="folder for results.csv, the pictures and the gallery cache (not given: model/<name>/search)")
    p.add_argument("--rank_by", default="cosine", choices=["cosine", "head"],
                   help="order of the matches: cosine similarity of the descriptors (the paper's), or the "
                        "verification head's P(same)")
    p.add_argument("--far", default=FARS[0], type=float, choices=FARS,
                   help="false-accept rate of the calibrated threshold that decides same or different")
    p.add_argument("--threshold", default=None, type=float,
                   help="decide 'same person' at this P(same) (cosine similarity for runs with neither a head nor a "
                        "calibration) instead of the calibrated threshold")
    p.add_argument("--prior", default=None, type=float,
                   help="the share of same-person pairs expected among those searched: the calibrated P(same) is "
                        "reported for it (not given: the share of the pairs it was calibrated on); decisions at a "
                        "--far threshold do not change with it")
    p.add_argument("--pictures", default=True, action=argparse.BooleanOptionalAction,
                   help="draw a picture per query (about 0.3 s each on a CPU; --no-pictures for many queries)")
    p.add_argument("--batchsize", default=64, type=int, help="images per forward pass")
    return p.parse_args(argv)


def list_images(path, flag):
    """The image files of a file or folder (recursively, sorted), or exit saying what is wrong."""
    if os.path.isfile(path):
        if not is_image(path):
            sys.exit(f"error: {flag} {path} is not an image file ({', '.join(IMAGE_EXTENSIONS)})")
        return [path]
    if not os.path.isdir(path):
        sys.exit(f"error: {flag} {path} does not exist")
    found = sorted(os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names if is_image(name))
    if not found:
        sys.exit(f"error: {flag} {path} holds no images ({', '.join(IMAGE_EXTENSIONS)}), in any subfolder")
    return found


class Images:
    """A dataset of image files for DataLoader: (image, 1), or (zeros, 0) for a file that cannot be
    decoded, so that one bad file does not stop a search of thousands."""

    def __init__(self, paths, transform, size):
        self.paths, self.transform, self.size = paths, transform, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        try:
            return self.transform(load_image(self.paths[index])), 1
        except UnreadableImage:
            return torch.zeros(3, *self.size), 0


class Recording:
    """A loader that remembers which images could be read while descriptors() consumes it."""

    def __init__(self, loader):
        self.loader, self.readable = loader, []

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for images, readable in self.loader:
            self.readable.append(readable)
            yield images, readable


def extract(model, paths, args, device, opts, desc):
    """(descriptors, readable mask) of image files."""
    if not paths:
        return np.zeros((0, FEATURE_DIM), np.float32), np.zeros(0, bool)
    size = (int(opts["height"]), int(opts["width"]))
    loader = Recording(DataLoader(Images(paths, test_transform(*size), size), batch_size=args.batchsize,
                                  num_workers=args.num_workers, pin_memory=device.type == "cuda"))
    features = descriptors(model, loader, device, desc, args.precision)
    return features, torch.cat(loader.readable).numpy().astype(bool)


def file_key(path):
    """What changes when a file is replaced or written: size, modification and change times, inode."""
    s = os.stat(path)
    return [s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino]


def gallery_features(model, paths, args, device, opts, folder):
    """Descriptors of the gallery images, from the run's cache where an image is unchanged; returns
    (readable paths, their descriptors, unreadable paths, how many readable ones were extracted now)."""
    checkpoint = checkpoint_path(folder, args.which_epoch)
    # The file's name leaves out the checkpoint's times, so that a checkpoint saved again replaces
    # its cache instead of adding one; the identity inside holds them, so that no stale one is used.
    place = (CACHE_VERSION, os.path.abspath(args.gallery), os.path.abspath(checkpoint), opts["height"], opts["width"],
             args.precision)
    identity = repr(place + (file_key(checkpoint),))
    cache = os.path.join(folder, SEARCH_CACHE, f"gallery-{hashlib.sha1(repr(place).encode()).hexdigest()[:16]}.npz")
    rel = [os.path.relpath(p, args.gallery) for p in paths]
    keys = np.array([file_key(p) for p in paths], dtype=np.int64).reshape(-1, 4)
    cached = {}
    if os.path.isfile(cache):
        with np.load(cache, allow_pickle=False) as saved:
            if str(saved["identity"]) == identity:  # a hash collision must not pass for this cache
                cached = {p: (k, f) for p, k, f in zip(saved["paths"].tolist(), saved["keys"], saved["features"])}
    fresh = [i for i, (p, k) in enumerate(zip(rel, keys)) if p not in cached or not np.array_equal(cached[p][0], k)]
    new, readable = extract(model, [paths[i] for i in fresh], args, device, opts, "gallery")
    features = np.zeros((len(paths), FEATURE_DIM), np.float32)
    ok = np.ones(len(paths), bool)
    features[fresh], ok[fresh] = new, readable
    for i in sorted(set(range(len(paths))) - set(fresh)):
        features[i] = cached[rel[i]][1]
    if fresh or len(cached) != len(paths):  # something was added, changed or removed
        # unreadable files are not cached: they are tried again next time
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, identity=np.array(identity), paths=np.array(rel)[ok], keys=keys[ok], features=features[ok])
    return ([p for p, good in zip(paths, ok) if good], features[ok], [p for p, good in zip(paths, ok) if not good],
            int(readable.sum()))


def judge(args, folder, head):
    """How pairs are judged: (p_same, p_head, threshold, decided_by, how P(same) was made, where
    the threshold comes from). p_same(cosine, logit) gives P(same) and p_head(logit) the head's
    calibrated P(same) (None where there is none). With the run's calibration (thresholds.yaml,
    for this checkpoint), P(same) is cosine's, calibrated (beta calibration: an exact copy gets 1),
    at --prior or the prior it was fitted at, and the threshold is the P(same) of the cosine
    threshold at --far. Without one, a run with a head reports the head's raw output against its
    raw threshold (a thresholds.yaml that predates calibrations) or 0.5; a run with neither
    decides on cosine at --threshold (p_same None)."""
    calibrated = load_thresholds(folder)
    if calibrated is not None and calibrated.get("checkpoint") != str(args.which_epoch):
        calibrated = None
    if calibrated is not None and "cosine_beta" in calibrated:
        fitted = calibrated["prior"]
        prior = args.prior if args.prior is not None else fitted
        beta, platt = calibrated["cosine_beta"], calibrated.get("head_platt")
        if beta["a"] == 0 and beta["b"] == 0:
            print(f"warning: in the calibration of {os.path.abspath(folder)}, P(same) does not rise with cosine "
                  f"similarity: this run does not tell these people apart; do not trust its decisions", file=sys.stderr)

        def p_same(cosine, logit):
            return probability(with_prior(beta_logit(cosine, **beta), fitted, prior))

        def p_head(logit):
            return probability(with_prior(platt["a"] * np.asarray(logit, np.float64) + platt["b"], fitted, prior))
        made = (f"cosine similarity calibrated on {calibrated['pairs']}, at a prior of {prior:.4g}"
                + (f" (the pairs' own; --prior changes it)" if args.prior is None else f" (fitted at {fitted:.4g})"))
        if args.threshold is not None:
            return p_same, p_head if platt and head is not None else None, args.threshold, "cosine", made, "--threshold"
        threshold = float(p_same(calibrated["cosine"][f"far={args.far:g}"], None))
        return (p_same, p_head if platt and head is not None else None, threshold, "cosine", made,
                f"calibrated at FAR {args.far:g} on {calibrated['pairs']}")
    if args.prior is not None:
        sys.exit(f"error: --prior needs a calibrated P(same), and {os.path.abspath(folder)} has none for "
                 f"net_{args.which_epoch}.pth (its thresholds.yaml predates calibrations, or it has none); leave "
                 f"--prior out, or train it again")
    if head is not None:
        def raw(cosine, logit):
            return probability(logit)
        made = "the head's raw output, uncalibrated (this run's thresholds.yaml predates calibrations)"
        if args.threshold is not None:
            return raw, None, args.threshold, "head", made, "--threshold"
        if calibrated is not None:
            return (raw, None, float(calibrated["head"][f"far={args.far:g}"]), "head", made,
                    f"calibrated at FAR {args.far:g} on {calibrated['pairs']}")
        print(f"note: {os.path.abspath(folder)} has no threshold calibrated for net_{args.which_epoch}.pth; the head "
              f"decides on its own (P(same) >= 0.5), uncalibrated: pass --threshold to choose", file=sys.stderr)
        return raw, None, 0.5, "head", made, "the head's own decision, uncalibrated"
    if args.threshold is not None:
        return None, None, args.threshold, "cosine", "", "--threshold"
    if calibrated is not None:
        return (None, None, float(calibrated["cosine"][f"far={args.far:g}"]), "cosine", "",
                f"calibrated at FAR {args.far:g} on {calibrated['pairs']}")
    sys.exit(f"error: {os.path.abspath(folder)} has neither a verification head nor a threshold calibrated for "
             f"net_{args.which_epoch}.pth (runs of the original code have neither); pass --threshold, a cosine "
             f"similarity above which two images count as the same person, or calibrate it")


def collapse_warning(name, gf):
    """The warning line for a gallery whose descriptors (unit rows of gf) the run has nearly
    collapsed into one, or None: its rankings and decisions then carry no information."""
    spread = median_pair_cosine(gf)
    if spread is None or spread <= COLLAPSED_MEDIAN:
        return None
    return (f"warning: {name} does not tell these images apart: two random gallery images have a median cosine "
            f"similarity of {spread:.3f} (above {COLLAPSED_MEDIAN}), as if all showed one person: it was trained too "
            f"little, or on images unlike these; do not trust its rankings or same-person decisions")


def draw(path, query, matches, decided_on, threshold):
    """The query, then its matches with scores; a green border where judged the same person."""
    tiles = [(query, "query", "black")]
    for m in matches:
        score = f"cos {m['cosine']:.3f}" + (f"\nP {m['p_same']:.3f}" if m["p_same"] != "" else "")
        tiles.append((m["gallery"], f"{m['rank']}\n{score}", COLOURS[m["same"] == 1]))
    draw_ranking(path, tiles, f"{os.path.basename(query)}: green = same person ({decided_on} >= {threshold:.4g})",
                 names=True, dpi=110)


def main(argv=None):
    args = parse_args(argv)
    if args.top < 1:
        sys.exit(f"error: --top {args.top} must be at least 1")
    if args.prior is not None and not 0 < args.prior < 1:
        sys.exit(f"error: --prior {args.prior} is a probability: give a value between 0 and 1, e.g. 0.01")
    folder = run_dir(args.name)
    output = args.output or os.path.join(folder, "search")
    gallery_paths = list_images(args.gallery, "--gallery")
    query_paths = [p for q in args.query for p in list_images(q, "--query")]
    device = choose_device(args.gpu_ids)
    model, opts = load_trained(folder, args.which_epoch)
    model = model.to(device, memory_format=torch.channels_last).eval()
    head = load_head(folder, args.which_epoch)
    if args.rank_by == "head" and head is None:
        sys.exit(f"error: --rank_by head, but {os.path.abspath(head_path(folder, args.which_epoch))} does not exist "
                 f"(runs of the original code saved no head); rank by cosine")
    p_same, p_head, threshold, by, made, source = judge(args, folder, head)
    decided_on = "P(same)" if p_same is not None else "cosine similarity"

    listed = len(gallery_paths)
    gallery_paths, gf, unreadable, extracted = gallery_features(model, gallery_paths, args, device, opts, folder)
    cached = len(gallery_paths) - extracted
    qf, readable = extract(model, query_paths, args, device, opts, "queries")
    unreadable += [p for p, ok in zip(query_paths, readable) if not ok]
    if unreadable:
        print(f"warning: skipped {len(unreadable)} file(s) that cannot be decoded as images: {cli.shorten(unreadable)}",
              file=sys.stderr)
    query_paths, qf = [p for p, ok in zip(query_paths, readable) if ok], qf[readable]
    if not query_paths or not gallery_paths:
        sys.exit(f"error: no readable {'query' if not query_paths else 'gallery'} image left to search with")
    print(f"gallery {args.gallery}: {listed} images, {extracted} extracted now, {cached} from the cache"
          + (f", {listed - extracted - cached} unreadable (skipped)" if listed > extracted + cached else ""))
    collapsed = collapse_warning(args.name, gf)
    if collapsed:
        print(collapsed, file=sys.stderr)

    # every pair at once: cosine is qf . gf, the head's logit qf . (w * gf) + b (verification.py)
    cosine = torch.from_numpy(qf) @ torch.from_numpy(gf).T
    logit = None if head is None else head_block(qf, gf, *head)(0, len(qf))
    order = (cosine if args.rank_by == "cosine" else logit).argsort(dim=1, descending=True, stable=True)[:, :args.top]
    rows = []
    for i, query in enumerate(query_paths):
        matches = []
        for rank, j in enumerate(order[i].tolist(), 1):
            c, s = float(cosine[i, j]), None if logit is None else float(logit[i, j])
            p = "" if p_same is None else float(p_same(c, s))
            matches.append({"query": query, "rank": rank, "gallery": gallery_paths[j], "cosine": c, "p_same": p,
                            "p_head": "" if p_head is None else float(p_head(s)),
                            "p_head_raw": "" if s is None else float(probability(s)),
                            "same": int((c if p == "" else p) >= threshold), "decided_by": by, "threshold": threshold})
        rows += matches
        if args.pictures:
            draw(os.path.join(output, f"{i:03d}_{os.path.splitext(os.path.basename(query))[0]}.png"), query, matches,
                 decided_on, threshold)
        print(f"{query}: {sum(m['same'] for m in matches)} of the top {len(matches)} judged the same person; "
              f"best {matches[0]['gallery']} (cosine {matches[0]['cosine']:.3f}"
              + (f", P(same) {matches[0]['p_same']:.3f})" if p_same is not None else ")"))
    results = os.path.join(output, "results.csv")
    with atomic_path(results) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(f"wrote {os.path.abspath(results)}" + (f" and {len(query_paths)} picture(s) beside it" if args.pictures else "")
          + f"; same person: {decided_on} >= {threshold:.6g} ({source})" + (f"; P(same): {made}" if made else ""))


if __name__ == "__main__":
    cli.run_main(main)
