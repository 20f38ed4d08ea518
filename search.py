"""Search your own images with a trained run: rank every image of a folder against query images,
and say for each match whether it shows the same person.

    python search.py --name ft_ResNet50 --query suspect.jpg more_queries/ --gallery footage/ --top 10

The gallery is any folder of images, searched recursively: no naming convention, no identity or
camera needed (.jpg, .jpeg, .png, .bmp, .webp, .tif; grayscale, palette, RGBA, CMYK and 16-bit
images are read as RGB, any size is resized to the run's input size, as test.py does). Files
that cannot be decoded are skipped with a warning naming them.

Each query's matches are ranked by cosine similarity of the descriptors (as the paper ranks
them; --rank_by head ranks by the verification head instead). For each match it reports the
cosine similarity, the verification head's probability that the two images show the same
person (the head the paper trained to answer exactly that: a weighted inner product of the two
descriptors, so all pairs cost one matrix product), and a same/different decision: P(same) at
least the threshold that train_new.py calibrated on held-out pairs at a false-accept rate of
--far (thresholds.yaml in the run folder; --threshold overrides it). Runs without a head (made
by the original code, or before heads were saved) decide by cosine similarity.

Writes, in --output (model/<name>/search by default):
    results.csv         one row per query and match: query, rank, gallery, cosine, p_same,
                        same (1 or 0), decided_by, threshold
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
from verification import FARS, head_block, load_thresholds, probability

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
                   help="decide 'same person' at this P(same) (cosine similarity for runs without a head) instead "
                        "of the calibrated threshold")
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


def decision_rule(args, folder, head):
    """(score name, threshold, where the threshold comes from) of the same/different decision."""
    by = "head" if head is not None else "cosine"
    if args.threshold is not None:
        return by, args.threshold, "--threshold"
    calibrated = load_thresholds(folder)
    if calibrated is not None and calibrated.get("checkpoint") == str(args.which_epoch):
        return by, float(calibrated[by][f"far={args.far:g}"]), f"calibrated at FAR {args.far:g} on {calibrated['pairs']}"
    if head is not None:
        print(f"note: {os.path.abspath(folder)} has no threshold calibrated for net_{args.which_epoch}.pth; the head "
              f"decides on its own (P(same) >= 0.5), uncalibrated: pass --threshold to choose", file=sys.stderr)
        return by, 0.5, "the head's own decision, uncalibrated"
    sys.exit(f"error: {os.path.abspath(folder)} has neither a verification head nor a threshold calibrated for "
             f"net_{args.which_epoch}.pth (runs of the original code have neither); pass --threshold, a cosine "
             f"similarity above which two images count as the same person")


def draw(path, query, matches, by, threshold):
    """The query, then its matches with scores; a green border where judged the same person."""
    tiles = [(query, "query", "black")]
    for m in matches:
        score = f"cos {m['cosine']:.3f}" + (f"\nP {m['p_same']:.3f}" if m["p_same"] != "" else "")
        tiles.append((m["gallery"], f"{m['rank']}\n{score}", COLOURS[m["same"] == 1]))
    draw_ranking(path, tiles, f"{os.path.basename(query)}: green = same person "
                              f"({'P(same)' if by == 'head' else 'cosine'} >= {threshold:.4g})", names=True, dpi=110)


def main(argv=None):
    args = parse_args(argv)
    if args.top < 1:
        sys.exit(f"error: --top {args.top} must be at least 1")
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
    by, threshold, source = decision_rule(args, folder, head)

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

    # every pair at once: cosine is qf . gf, the head's logit qf . (w * gf) + b (verification.py)
    cosine = torch.from_numpy(qf) @ torch.from_numpy(gf).T
    logit = None if head is None else head_block(qf, gf, *head)(0, len(qf))
    order = (cosine if args.rank_by == "cosine" else logit).argsort(dim=1, descending=True, stable=True)[:, :args.top]
    rows = []
    for i, query in enumerate(query_paths):
        matches = []
        for rank, j in enumerate(order[i].tolist(), 1):
            p_same = "" if logit is None else float(probability(logit[i, j]))
            score = p_same if by == "head" else float(cosine[i, j])
            matches.append({"query": query, "rank": rank, "gallery": gallery_paths[j], "cosine": float(cosine[i, j]),
                            "p_same": p_same, "same": int(score >= threshold), "decided_by": by, "threshold": threshold})
        rows += matches
        if args.pictures:
            draw(os.path.join(output, f"{i:03d}_{os.path.splitext(os.path.basename(query))[0]}.png"), query, matches,
                 by, threshold)
        print(f"{query}: {sum(m['same'] for m in matches)} of the top {len(matches)} judged the same person; "
              f"best {matches[0]['gallery']} (cosine {matches[0]['cosine']:.3f}"
              + (f", P(same) {matches[0]['p_same']:.3f})" if logit is not None else ")"))
    results = os.path.join(output, "results.csv")
    with atomic_path(results) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(f"wrote {os.path.abspath(results)}" + (f" and {len(query_paths)} picture(s) beside it" if args.pictures else "")
          + "; same person: "
          f"{'P(same)' if by == 'head' else 'cosine similarity'} >= {threshold:.6g} ({source})")


if __name__ == "__main__":
    cli.run_main(main)
