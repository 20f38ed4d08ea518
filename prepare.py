"""Stage 1: turn a raw Market-1501 / DukeMTMC-reID folder into the ImageFolder
tree the other stages read, one folder per identity:

    <download_path>/pytorch/train_all/<id>/   every bounding_box_train image
    <download_path>/pytorch/train/<id>/       train_all minus val
    <download_path>/pytorch/val/<id>/         the first image (sorted by name) of each
                                              training id that has two or more images
    <download_path>/pytorch/query/<id>/       query
    <download_path>/pytorch/gallery/<id>/     bounding_box_test (junk in -1/, distractors in 0000/)
    <download_path>/pytorch/multi-query/<id>/ gt_bbox, where the dataset has it (Market-1501)

Files are hard links to the raw images (a copy where links are impossible);
nothing under the raw folders is written, moved or deleted, and running it
again gives the same tree.
"""
import argparse
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from data import NAME_HELP, UnreadableImage, is_image, load_image, parse_name
from runs import atomic_path

# raw folder -> prepared split(s); gt_bbox is optional (DukeMTMC-reID has none)
SOURCES = {"query": "query", "bounding_box_test": "gallery", "bounding_box_train": "train_all", "gt_bbox": "multi-query"}
REQUIRED = ("bounding_box_train", "bounding_box_test", "query")


def list_images(folder):
    """Sorted image names of a raw folder, with their ids; exit naming any name that does not parse."""
    names = sorted(n for n in os.listdir(folder) if is_image(n))
    parsed = [parse_name(n) for n in names]
    bad = [n for n, p in zip(names, parsed) if p is None]
    if bad:
        sys.exit(f"error: {len(bad)} file name(s) in {folder} do not parse, e.g. {', '.join(bad[:3])}; "
                 f"expected {NAME_HELP}")
    return [(n, p[0]) for n, p in zip(names, parsed)]


def id_folder(pid):
    # Market-1501 names carry 4-digit ids; keeping that spelling keeps folders sorted numerically.
    return "-1" if pid == -1 else f"{pid:04d}"


def link(src, dst):
    """Make dst the same file as src. Never writes through an existing dst: with hard
    links that file is the raw image itself, so a stale dst is replaced by rename."""
    if os.path.exists(dst) and os.path.samefile(src, dst):
        return
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with atomic_path(dst) as tmp:
        os.remove(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)


def unreadable(paths):
    """The paths among `paths` that cannot be decoded as images (each decoded once, in threads:
    PIL releases the GIL while decoding)."""
    def check(path):
        try:
            load_image(path)
        except UnreadableImage:
            return path
        return None

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return [p for p in tqdm(pool.map(check, paths), total=len(paths), desc="checking images", unit="img", leave=False) if p]


def plan(sources, bad):
    """(source file, split, id folder, name) for every file of the prepared tree.
    sources: raw folder -> its (name, id) list; files in `bad` are left out."""
    entries = []
    for raw, images in sources.items():
        split = SOURCES[os.path.basename(raw)]
        images = [(n, pid) for n, pid in images if os.path.join(raw, n) not in bad]
        entries += [(os.path.join(raw, n), split, id_folder(pid), n) for n, pid in images]
        if split == "train_all":
            by_id = {}
            for n, pid in images:
                by_id.setdefault(pid, []).append(n)
            val = {names[0] for names in by_id.values() if len(names) > 1}
            entries += [(os.path.join(raw, n), "val" if n in val else "train", id_folder(pid), n) for n, pid in images]
    return entries


def shorten(items, shown=5):
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--download_path", default="../Market",
                        help="raw dataset folder, the one holding bounding_box_train, bounding_box_test and query")
    parser.add_argument("--dataset", choices=["market", "duke"], default="market",
                        help="which dataset the folder holds (both share the same layout and name scheme)")
    parser.add_argument("--skip_check", action="store_true",
                        help="do not decode every image first (faster; a broken file then stops training instead)")
    parser.add_argument("--skip_unreadable", action="store_true",
                        help="leave images that cannot be decoded out of the prepared tree instead of stopping")
    args = parser.parse_args(argv)

    if not os.path.isdir(args.download_path):
        sys.exit(f"error: --download_path {args.download_path} does not exist; pass the folder of the raw {args.dataset} dataset")
    missing = [f for f in REQUIRED if not os.path.isdir(os.path.join(args.download_path, f))]
    if missing:
        sys.exit(f"error: {args.download_path} lacks {', '.join(missing)}; --download_path must be the raw dataset "
                 f"folder (holding {', '.join(REQUIRED)}), not its pytorch/ tree")
    out = os.path.join(args.download_path, "pytorch")

    sources = {os.path.join(args.download_path, raw): list_images(os.path.join(args.download_path, raw))
               for raw in SOURCES if os.path.isdir(os.path.join(args.download_path, raw))}
    bad = [] if args.skip_check else unreadable([os.path.join(raw, n) for raw, images in sources.items() for n, _ in images])
    if bad and not args.skip_unreadable:
        sys.exit(f"error: {len(bad)} image(s) cannot be decoded: {shorten(bad)}; replace them (nothing under "
                 f"{args.download_path} was changed), or pass --skip_unreadable to prepare without them")
    if bad:
        print(f"warning: left out {len(bad)} image(s) that cannot be decoded: {shorten(bad)}", file=sys.stderr)

    entries = plan(sources, set(bad))
    for src, split, pid, name in tqdm(entries, desc="linking", unit="img", leave=False):
        link(src, os.path.join(out, split, pid, name))

    print(f"wrote {out}")
    for split in ("train_all", "train", "val", "query", "gallery", "multi-query"):
        files = [e for e in entries if e[1] == split]
        if files:
            print(f"  {split:<12} {len(files):6d} images {len({e[2] for e in files}):5d} ids")
    lonely = sorted({e[2] for e in entries if e[1] == "query"} - {e[2] for e in entries if e[1] == "gallery"})
    if lonely:
        print(f"warning: {len(lonely)} query id(s) have no gallery image ({shorten(lonely)}); evaluation will skip "
              f"their queries", file=sys.stderr)


if __name__ == "__main__":
    main()
