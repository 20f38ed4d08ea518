"""Search your own images and footage with a trained run: rank every image of a folder, or every
person seen in a video, against query images, and say for each match whether it is the same person.

    python search.py --name ft_ResNet50 --query suspect.jpg more_queries/ --gallery crops/ --top 10
    python search.py --name ft_ResNet50 --query suspect.jpg --gallery cam1.mp4 cam2/ \
        --detections cam1.txt cam2/det/det.txt
    python search.py --name ft_ResNet50 --gallery cam1/ cam2/     # no --query: who appears in both cameras

--gallery takes folders of images, searched recursively (no naming convention, identity or
camera needed; .jpg, .jpeg, .png, .bmp, .webp, .tif, in any mode and size, read as test.py reads
them; files that cannot be decoded are skipped with a warning naming them), and footage: video
files (.mp4, .avi, .mkv, .mov) and MOTChallenge sequence folders (img1/, seqinfo.ini). In footage,
people are the boxes of a detections file in MOTChallenge format (--detections, one per footage
in the order given; a sequence's own det/det.txt, or gt/gt.txt with --ground_truth or where it has
no det.txt), or of a COCO person detector (detector.py) where there is none, on every --stride-th
frame. Boxes are linked across frames into tracklets (the file's track ids, else motion and
appearance: tracking.py), and a tracklet is matched by the mean of its boxes' descriptors: one
answer per person and stretch of time, with its first and last time and the box that best
matches the query.

Each query's matches are ranked by cosine similarity of the descriptors (as the paper ranks
them; --rank_by head ranks by the verification head instead). For each match it reports the
cosine similarity, the probability that the two show the same person, and a same/different
decision. P(same) is the calibration of cosine similarity that train_new.py fitted on held-out
pairs (thresholds.yaml in the run folder; beta calibration, which gives an exact copy P(same) 1):
it means what it says for pairs of which the share --prior is the same person (by default the
share among the pairs it was fitted on). The verification head's P(same) (the head the paper
trained to answer exactly that; a weighted inner product of the two descriptors, so all pairs
cost one matrix product), calibrated too, and its raw output are reported beside it. The decision
is P(same) at least the threshold calibrated there at a false-accept rate of --far (--threshold
overrides it). In footage, two people on one frame are two different people: where the footage
gives enough such pairs, the threshold at --far is set on them and P(same) moved to it
(decisions.py), as the output says. A run whose thresholds.yaml predates calibrations reports and decides by the head's
raw output; one with neither head nor thresholds (the original code's) needs --threshold on
cosine similarity.

Writes, in --output (model/<name>/search by default):
    results.csv         one row per query and match: query, rank, gallery, cosine, p_same, p_head
                        (the head's calibrated P(same)), p_head_raw (its own output), same (1 or 0),
                        decided_by (the score P(same) comes from), threshold (on P(same)), and for
                        footage video, frame, time, left, top, width, height (the best box), track,
                        first_frame, last_frame, start, end (the tracklet; times as hh:mm:ss.s)
    pairs.csv           without --query: the tracklets of different footage judged the same person
    tracklets/<footage>.txt  each footage's tracklets as a MOTChallenge results file
                        (frame,id,left,top,width,height,conf,-1,-1,-1), for any MOT tool to score or draw
    <n>_<query>.png     the query, then its matches with their scores (footage: the best frame, the
                        box drawn); green = judged the same person
    report.html         one self-contained page of every query's matches, thumbnails inline
and keeps the gallery's descriptors in the run's cache, model/<name>/cache/ (gallery.py), one file
per gallery folder or footage, checkpoint, input size and precision, whatever --output and the
queries: a second search of an unchanged gallery extracts only the queries.
"""
import argparse
import contextlib
import csv
import io
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

from model import check_precision, load_head, load_trained
from reid import cli
from reid.cli import UserError
from reid.data import UnreadableImage, load_image, test_transform
from reid.devices import CHECK_IMAGES, Arithmetic, loader_workers, note_emulated, start_processes
from reid.evaluation.pictures import draw_ranking, draw_why, map_limit, overlay
from reid.evaluation.similarity_maps import similarity_maps
from reid.evaluation.verification import (
    COLLAPSED_FOOTAGE_MEDIAN,
    COLLAPSED_MEDIAN,
    FARS,
    head_block,
    median_pair_cosine,
)
from reid.runs import atomic_path, head_path, run_dir
from reid.search import footage as fo
from reid.search import gallery, report, tracking
from reid.search.decisions import FootagePairs, judge_of_run

# the collapse warning looks at the footage's pairs of different people where it has this many
COLLAPSE_PAIRS = 50


def parse_args(argv=None):
    p = cli.parser(__doc__)
    cli.add_run_flags(p, "to search with")
    cli.add_device_flags(p, "run")
    p.add_argument("--query", nargs="+", default=None,
                   help="query images, or folders of them (searched recursively); not given, with two or more footage "
                        "galleries: the people judged the same in different footage")
    p.add_argument("--gallery", nargs="+", required=True,
                   help="what to search: folders of images (recursively), video files, MOTChallenge sequence folders")
    cli.add_footage_flags(p, "--gallery")
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
                   help="draw a picture per query and write report.html (about 0.3 s a query on a CPU; --no-pictures "
                        "for many queries)")
    p.add_argument("--why", action="store_true",
                   help="also draw why each match matches: over the query and the match (for footage, its best box) "
                        "where their cosine similarity comes from, a map that sums to it (similarity_maps.py): "
                        "<n>_<query>_why.png and in report.html (two more forward passes a match; ResNet-50 runs)")
    p.add_argument("--batchsize", default=64, type=int, help="images per forward pass")
    return p.parse_args(argv)


def collapse_warning(name, gf, described=()):
    """The warning line for a gallery whose descriptors the run has nearly collapsed into one, or
    None: its rankings and decisions then carry no information. Measured on the footage's pairs of
    different people (two boxes of one frame that do not overlap; Described.different) where it
    gives COLLAPSE_PAIRS of them, else on pairs of the gallery's unit descriptors gf."""
    different = np.concatenate([np.zeros(0, np.float32)] + [d.different for d in described])
    if len(different) >= COLLAPSE_PAIRS:
        spread, bound, what = float(np.median(different)), COLLAPSED_FOOTAGE_MEDIAN, "two people on one frame"
    else:
        spread, bound, what = median_pair_cosine(gf), COLLAPSED_MEDIAN, "two random gallery images"
    if spread is None or spread <= bound:
        return None
    return (f"warning: {name} does not tell these images apart: {what} have a median cosine similarity of "
            f"{spread:.3f} (above {bound}), as if all showed one person: it was trained too little, or on images "
            f"unlike these; do not trust its rankings or same-person decisions")


def check_images(query_paths, args, opts):
    """A few of the search's own images, for the check of reduced precision, as (image,) items: the
    queries, then the images of gallery folders; for a search of footage alone, its first frame,
    whole."""
    paths = list(query_paths[:CHECK_IMAGES])
    for path in args.gallery:
        if len(paths) < CHECK_IMAGES and not fo.is_footage(path):
            paths += gallery.list_images(path, "--gallery")[:CHECK_IMAGES - len(paths)]
    transform = test_transform(*gallery.input_size(opts))
    images = []
    for path in paths:
        try:
            images.append(transform(load_image(path)))
        except UnreadableImage:
            continue  # the search skips it and says so
    footage = [g for g in args.gallery if fo.is_footage(g)]
    if not images and footage:
        _, _, first = next(fo.frames(fo.open_footage(footage[0])))
        images.append(transform(Image.fromarray(first)))
    return [(image,) for image in images] or None  # None: nothing readable, which the search reports itself


def gallery_entries(describer, args, detections):
    """Every gallery entry, images and tracklets: (rows, their unit descriptors, the footage
    described, the unreadable image files). A row is a dict of what results.csv says of the
    entry; a tracklet's row also holds "described" and "span" (its boxes' rows in the Described's
    box_features), for the best box of each match. `detections`: gallery.footage_detections()."""
    rows, features, described, unreadable = [], [], [], []
    detector = []
    for path in args.gallery:
        if path in detections:
            d = gallery.describe_at(path, detections[path], describer, args, detector)
            described.append(d)
            for t, span in zip(d.tracklets, d.spans()):
                rows.append({"gallery": d.footage.path, "described": d, "span": span, "track": t.id,
                             "first_frame": t.first_frame, "last_frame": t.last_frame,
                             "start": fo.format_time(t.first_time), "end": fo.format_time(t.last_time)})
            features.append(d.features)
            continue
        paths = gallery.list_images(path, "--gallery")
        kept, gf, bad, extracted = gallery.image_features(describer, paths, path)
        rows += [{"gallery": p} for p in kept]
        features.append(gf)
        unreadable += bad
        print(f"gallery {path}: {len(paths)} images, {extracted} extracted now, {len(kept) - extracted} from the cache"
              + (f", {len(bad)} unreadable (skipped)" if bad else ""))
    return rows, np.concatenate(features), described, unreadable


def best_box(row, query_feature):
    """The box of a tracklet row that best matches the query, as results.csv's columns."""
    d, (start, stop) = row["described"], row["span"]
    k = start + int(np.argmax(d.box_features[start:stop] @ query_feature))
    box = d.boxes()[k]
    return {"video": d.footage.path, "frame": box.frame,
            "time": fo.format_time(fo.frame_time(box.frame, d.footage.fps)), "left": box.left, "top": box.top,
            "width": box.width, "height": box.height}


def frame_tiles(matches):
    """{(footage path, frame, box): (a picture of the box in its frame, the box's crop)} for the
    footage matches: the box drawn on its frame, cut to the box with context around it; each
    footage decoded once."""
    wanted = {}
    for m in matches:
        if m["video"] != "":
            wanted.setdefault(m["described"].footage.path, (m["described"].footage, set()))[1].add(m["frame"])
    frames = {}
    for path, (footage, numbers) in wanted.items():
        for n, rgb in fo.decoded(footage, numbers.__contains__):
            frames[path, n] = rgb
    tiles = {}
    for m in matches:
        if m["video"] == "":
            continue
        image = Image.fromarray(frames[m["video"], m["frame"]])
        left, top, width, height = (m[k] - (1 if k in ("left", "top") else 0)
                                    for k in ("left", "top", "width", "height"))
        crop = image.crop((round(left), round(top), round(left + width), round(top + height)))
        ImageDraw.Draw(image).rectangle((left, top, left + width, top + height), outline=(255, 220, 0),
                                        width=max(1, round(height / 40)))
        # the box with as much again around it: who it is, and where
        cut = image.crop((max(0, left - width), max(0, top - height / 4), min(image.width, left + 2 * width),
                          min(image.height, top + 1.25 * height)))
        cut.info["name"] = f"{os.path.basename(m['video'])} {m['time']}"
        tiles[m["video"], m["frame"], m["left"], m["top"]] = cut, crop
    return tiles


def tile_of(m, tiles):
    return tiles[m["video"], m["frame"], m["left"], m["top"]][0] if m["video"] != "" else m["gallery"]


def crop_of(m, tiles):
    """The image the match's descriptor was made from: the gallery image, or the box cropped."""
    return tiles[m["video"], m["frame"], m["left"], m["top"]][1] if m["video"] != "" else load_image(m["gallery"])


def explain(model, device, opts, query, matches, tiles, path):
    """--why: the similarity maps of the query and each match drawn into `path`; for each match,
    its two images over their maps side by side, for report.html."""
    size = gallery.input_size(opts)
    transform = test_transform(*size)
    query_image = load_image(query)
    pairs = []
    for m in matches:
        match_image = crop_of(m, tiles)
        images = [transform(i).to(device) for i in (query_image, match_image)]
        map_q, map_m, cosine = similarity_maps(model, *images)
        map_q, map_m = map_q.cpu().numpy(), map_m.cpu().numpy()
        pairs.append((query_image.resize(size[::-1]), map_q, match_image.resize(size[::-1]), map_m,
                      f"{m['rank']}: cos {cosine:.3f}"))
    height, width = pairs[0][1].shape
    draw_why(path, pairs, f"{os.path.basename(query)}: where the cosine comes from, red adding, blue taking away\n"
                          f"query above, match below (footage: its best box); {height} x {width} places, as the "
                          f"network's last feature map")
    limit = map_limit([m for _, mq, _, mm, _ in pairs for m in (mq, mm)])
    return [side_by_side(overlay(q, mq, limit), overlay(g, mm, limit)) for q, mq, g, mm, _ in pairs]


def where(m):
    """A match in words: the image, or the footage with the tracklet's times, and its scores."""
    scores = f"cosine {m['cosine']:.3f}" + (f", P(same) {m['p_same']:.3f}" if m["p_same"] != "" else "")
    if m["video"] == "":
        return f"{m['gallery']} ({scores})"
    return (f"{m['video']} {m['start']} - {m['end']} (frames {m['first_frame']}-{m['last_frame']}, track {m['track']}; "
            f"{scores})")


def as_image(tile):
    return tile if isinstance(tile, Image.Image) else load_image(tile)


def draw(path, query, matches, judge, tiles):
    """The query, then its matches with scores; a green border where judged the same person."""
    cells = [(query, "query", "black")]
    for m in matches:
        score = f"cos {m['cosine']:.3f}" + (f"\nP {m['p_same']:.3f}" if m["p_same"] != "" else "")
        cells.append((tile_of(m, tiles), f"{m['rank']}\n{score}", report.COLOURS[m["same"] == 1]))
    draw_ranking(path, cells, f"{os.path.basename(query)}: green = same person ({judge.decided_on} >= "
                              f"{judge.threshold:.4g})",
                 names=True, dpi=110)


def caption(m):
    """The lines under a match in report.html."""
    if m["video"] == "":
        return [os.path.basename(m["gallery"])]
    return [os.path.basename(m["video"]), f"{m['start']} - {m['end']}",
            f"frames {m['first_frame']}-{m['last_frame']}, track {m['track']}",
            f"best frame {m['frame']} ({m['time']})"]


def write_tracklets(output, described):
    """Each footage's tracklets as a MOTChallenge results file, <output>/tracklets/<footage name>.txt
    (a name met twice gets _2, _3, ...); returns their paths."""
    paths, taken = [], set()
    for d in described:
        name, k = d.footage.name, 2
        while name in taken:
            name, k = f"{d.footage.name}_{k}", k + 1
        taken.add(name)
        path = os.path.join(output, "tracklets", name + ".txt")
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.writelines(tracking.mot_lines(d.tracklets))
        paths.append(path)
    return paths


def write_csv(path, rows, fields):
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def main(argv=None):
    args = parse_args(argv)
    if args.top < 1:
        raise UserError(f"--top {args.top} must be at least 1")
    if args.stride < 1:
        raise UserError(f"--stride {args.stride} must be at least 1 (1: every frame)")
    if args.prior is not None and not 0 < args.prior < 1:
        raise UserError(f"--prior {args.prior} is a probability: give a value between 0 and 1, e.g. 0.01")
    for path in args.gallery:
        if not os.path.exists(path):
            raise UserError(f"--gallery {path} does not exist")
    footage_count = sum(fo.is_footage(g) for g in args.gallery)
    if args.query is None and footage_count < 2:
        raise UserError("--query is missing: give query images, or two or more footage galleries (videos or sequence "
                        "folders) to list the people seen in more than one")
    folder = run_dir(args.name)
    output = args.output or os.path.join(folder, "search")
    query_paths = [p for q in args.query or [] for p in gallery.list_images(q, "--query")]
    detections = gallery.footage_detections(args, [g for g in args.gallery if fo.is_footage(g)])
    shard, device = start_processes(args.gpu_ids)
    args.num_workers = loader_workers(args.num_workers, device)
    note_emulated(device, args.precision)
    model, opts = load_trained(folder, args.which_epoch)
    if args.why and (opts.get("use_dense") or not args.pictures or args.query is None):
        dense = f"; {args.name} is a DenseNet-121 run (--use_dense)" if opts.get("use_dense") else ""
        raise UserError(f"--why draws into the pictures of a search with --query (not --no-pictures), for ResNet-50 "
                        f"runs{dense}")
    model = model.to(device, memory_format=torch.channels_last).eval()
    images = check_images(query_paths, args, opts) if args.precision != "fp32" else None
    if images is not None:
        # what the gallery's descriptors and their cache are computed in (gallery.py reads args.precision)
        args.precision = check_precision(Arithmetic(device, args.precision), model, images, "images of the search",
                                         shard)
    describer = gallery.Describer(model, device, folder, str(args.which_epoch), gallery.input_size(opts),
                                  args.precision, args.batchsize, args.num_workers)
    if shard.world > 1:
        # under torchrun each process describes its share of the footage into the run's cache (which
        # must be on a disk they all see), and the first then searches it all from there
        with contextlib.redirect_stdout(io.StringIO()) if not shard.main else contextlib.nullcontext():
            for path in shard.take(list(detections)):
                gallery.describe_at(path, detections[path], describer, args, [])
        torch.distributed.barrier()
        shard.finish()
        if not shard.main:
            return
    head = load_head(folder, args.which_epoch)
    if args.rank_by == "head" and head is None:
        raise UserError(f"--rank_by head, but {os.path.abspath(head_path(folder, args.which_epoch))} does not exist "
                        f"(runs of the original code saved no head); rank by cosine")

    entries, gf, described, unreadable = gallery_entries(describer, args, detections)
    judge = judge_of_run(folder, args.which_epoch, head, args.far, threshold=args.threshold, prior=args.prior,
                         footage=FootagePairs.of(described))
    qf, readable = describer.extract(query_paths, "queries")
    unreadable += [p for p, ok in zip(query_paths, readable) if not ok]
    if unreadable:
        print(f"warning: skipped {len(unreadable)} file(s) that cannot be decoded as images: {cli.shorten(unreadable)}",
              file=sys.stderr)
    query_paths, qf = [p for p, ok in zip(query_paths, readable) if ok], qf[readable]
    if (args.query is not None and not query_paths) or not entries:
        raise UserError(f"no readable {'query image' if entries else 'gallery image or person in the footage'} left "
                        f"to search with")
    collapsed = collapse_warning(args.name, gf, described)
    if collapsed:
        print(collapsed, file=sys.stderr)
    tracked = write_tracklets(output, described)
    if tracked:
        print(f"wrote the tracklets as MOTChallenge results, one file per video or sequence: "
              f"{os.path.abspath(os.path.dirname(tracked[0]))}")

    if args.query is None:
        across_cameras(args, output, entries, gf, head, judge)
        return
    # every pair at once: cosine is qf . gf, the head's logit qf . (w * gf) + b (verification.py)
    cosine = torch.from_numpy(qf) @ torch.from_numpy(gf).T
    logit = None if head is None else head_block(qf, gf, *head)(0, len(qf))
    order = (cosine if args.rank_by == "cosine" else logit).argsort(dim=1, descending=True, stable=True)[:, :args.top]
    rows = []
    for i, query in enumerate(query_paths):
        for rank, j in enumerate(order[i].tolist(), 1):
            entry = entries[j]
            row = {"query": query, "rank": rank, "gallery": entry["gallery"]}
            row.update(judge.scores(float(cosine[i, j]), None if logit is None else float(logit[i, j])))
            row.update({k: "" for k in gallery.FOOTAGE_COLUMNS})
            if "described" in entry:
                row.update(best_box(entry, qf[i]), described=entry["described"],
                           **{k: entry[k] for k in ("track", "first_frame", "last_frame", "start", "end")})
            rows.append(row)
    tiles = frame_tiles(rows) if args.pictures else {}
    sections = []
    for i, query in enumerate(query_paths):
        matches = [r for r in rows if r["query"] == query]
        if args.pictures:
            stem = os.path.join(output, f"{i:03d}_{os.path.splitext(os.path.basename(query))[0]}")
            draw(stem + ".png", query, matches, judge, tiles)
            whys = (explain(model, device, opts, query, matches, tiles, stem + "_why.png") if args.why
                    else [None] * len(matches))
            sections.append({"heading": query, "image": load_image(query), "note": "",
                             "hits": [{"image": as_image(tile_of(m, tiles)), "caption": caption(m),
                                       "cosine": m["cosine"], "p_same": m["p_same"] if m["p_same"] != "" else None,
                                       "same": m["same"] == 1, "rank": m["rank"], "why": why}
                                      for m, why in zip(matches, whys)]})
        same = [m for m in matches if m["same"]]
        print(f"{query}: {len(same)} of the top {len(matches)} judged the same person; best {where(matches[0])}")
        for m in same[1:] if matches[0]["same"] else same:
            print(f"  same person: {where(m)}")
    fields = ["query", "rank", "gallery", "cosine", "p_same", "p_head", "p_head_raw", "same", "decided_by", "threshold"]
    results = os.path.join(output, "results.csv")
    write_csv(results, rows, fields + (gallery.FOOTAGE_COLUMNS if described else []))
    if args.pictures:
        report.write_report(os.path.join(output, "report.html"), f"search with {args.name}",
                            [f"gallery: {', '.join(args.gallery)}"] + judge.rule(), sections)
    print(f"wrote {os.path.abspath(results)}" + (f", {len(query_paths)} picture(s) and report.html beside it"
                                                 if args.pictures else "") + "; " + "; ".join(judge.rule()))


PAIR_FIELDS = ["video_a", "track_a", "start_a", "end_a", "frames_a",
               "video_b", "track_b", "start_b", "end_b", "frames_b"]


def across_cameras(args, output, entries, gf, head, judge):
    """Without queries: every pair of tracklets of different footage judged the same person by
    `judge`, the most likely first, into pairs.csv (and report.html)."""
    tracks = [k for k, e in enumerate(entries) if "described" in e]
    tf = gf[tracks]
    cosine = torch.from_numpy(tf) @ torch.from_numpy(tf).T
    logit = None if head is None else head_block(tf, tf, *head)(0, len(tf))
    pairs = []
    for a in range(len(tracks)):
        for b in range(a + 1, len(tracks)):
            ea, eb = entries[tracks[a]], entries[tracks[b]]
            if ea["described"] is eb["described"]:
                continue  # the same footage: the question is who appears in two
            row = judge.scores(float(cosine[a, b]), None if logit is None else float(logit[a, b]))
            if row["same"]:
                for side, e, other in (("a", ea, tf[b]), ("b", eb, tf[a])):
                    row.update({f"video_{side}": e["gallery"], f"track_{side}": e["track"], f"start_{side}": e["start"],
                                f"end_{side}": e["end"], f"frames_{side}": f"{e['first_frame']}-{e['last_frame']}",
                                # its box that looks most like the other tracklet, for the report
                                side: dict(best_box(e, other), described=e["described"])})
                pairs.append(row)
    key = "p_same" if pairs and pairs[0]["p_same"] != "" else "cosine"
    pairs.sort(key=lambda r: -r[key])
    for r in pairs:
        print(f"{r['video_a']} {r['start_a']} - {r['end_a']} (track {r['track_a']})  and  {r['video_b']} "
              f"{r['start_b']} - {r['end_b']} (track {r['track_b']}): cosine {r['cosine']:.3f}"
              + (f", P(same) {r['p_same']:.3f}" if r["p_same"] != "" else ""))
    path = os.path.join(output, "pairs.csv")
    write_csv(path, pairs, PAIR_FIELDS + ["cosine", "p_same", "p_head", "p_head_raw", "decided_by", "threshold"])
    if args.pictures:
        tiles = frame_tiles([r[side] for r in pairs for side in ("a", "b")])
        hits = [{"image": side_by_side(tile_of(r["a"], tiles), tile_of(r["b"], tiles)), "rank": k,
                 "caption": [f"{os.path.basename(r['video_a'])} {r['start_a']} - {r['end_a']}, track {r['track_a']}",
                             f"{os.path.basename(r['video_b'])} {r['start_b']} - {r['end_b']}, track {r['track_b']}"],
                 "cosine": r["cosine"], "p_same": r["p_same"] if r["p_same"] != "" else None, "same": True}
                for k, r in enumerate(pairs, 1)]
        report.write_report(os.path.join(output, "report.html"),
                            f"people seen in more than one footage, by {args.name}",
                            [f"footage: {', '.join(args.gallery)}"] + judge.rule(),
                            [{"heading": "pairs of tracklets judged the same person, the most likely first",
                              "image": None, "note": "each: the box of one tracklet beside the box of the other",
                              "hits": hits}])
    print(f"wrote {os.path.abspath(path)}" + (" and report.html beside it" if args.pictures else "")
          + f": {len(pairs)} pair(s) of tracklets in different footage judged the same person; "
          + "; ".join(judge.rule()))


def side_by_side(left, right):
    """Two pictures in one, at the height of the taller, a gap between them."""
    height = max(left.height, right.height)
    left, right = (p.resize((max(1, round(p.width * height / p.height)), height)) for p in (left, right))
    both = Image.new("RGB", (left.width + right.width + 8, height), "white")
    both.paste(left, (0, 0))
    both.paste(right, (left.width + 8, 0))
    return both


if __name__ == "__main__":
    cli.run_main(main)
