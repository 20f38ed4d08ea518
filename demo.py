"""Picture of one query's ranking: the query, then its top gallery images, each
with its rank and a border saying what the protocol makes of it:
green = same person (other camera), red = another person, grey = junk (same
person in the query's camera, or id -1), which evaluation removes: junk is
labelled "junk" and takes no rank, so the ranks are those Rank@k counts.

    python demo.py --query_index 7 --test_dir ../Market/pytorch   # reads pytorch_result.mat, writes show.png
    python demo.py --query_index 7 --test_dir ../Market/pytorch --why why.png --name ft_ResNet50
    python demo.py --query_index 7 --test_dir my_people/pytorch --result before.mat after.mat   # a row each

With --why, it also draws why the query and its first match match: over each image, the share
of their cosine similarity each place contributes (reid/evaluation/similarity_maps.py), which
adds up to it exactly.
"""
import os

import torch

from reid import cli
from reid.cli import UserError
from reid.data import RESULT_KEYS, image_folder, load_features, load_image, test_transform
from reid.evaluation.metrics import Side, good_and_junk, rank_queries, ranking
from reid.evaluation.pictures import draw_rankings, draw_similarity
from reid.runs import run_dir

COLOURS = {"good": "#1a9850", "other": "#d73027", "junk": "#969696"}


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--query_index", default=0, type=int, help="row of the query in pytorch_result.mat (0-based)")
    p.add_argument("--test_dir", default="../Market/pytorch",
                   help="the pytorch/ folder the features were extracted from")
    p.add_argument("--result", nargs="+", default=["pytorch_result.mat"],
                   help="feature file written by test.py; several (of one --test_dir, e.g. a run before and after "
                        "adapt.py): a row each")
    p.add_argument("--topk", default=10, type=int, help="number of gallery images to show")
    p.add_argument("--output", default="show.png", help="where to write the picture (PNG)")
    p.add_argument("--why", default=None, metavar="PNG",
                   help="also draw where the query and its first match's similarity comes from, into this PNG "
                        "(needs --name; the first --result's match)")
    p.add_argument("--name", default=None, help="the run (model/<name>) whose features these are, for --why")
    args = p.parse_args(argv)
    if args.why and not args.name:
        raise UserError("--why needs --name, the run whose features --result holds (model/<name>)")

    query = image_folder(args.test_dir, "query", "--test_dir")
    gallery = image_folder(args.test_dir, "gallery", "--test_dir")
    results = [load_features(path, RESULT_KEYS) for path in args.result]
    for path, r in zip(args.result, results):
        if (len(query), len(gallery)) != (len(r["query_f"]), len(r["gallery_f"])):
            raise UserError(f"{path} has {len(r['query_f'])} queries and {len(r['gallery_f'])} gallery images but "
                            f"{args.test_dir} has {len(query)} and {len(gallery)}; pass the --test_dir given to "
                            f"test.py")
    if not 0 <= args.query_index < len(query):
        raise UserError(f"--query_index {args.query_index} is out of range; there are {len(query)} queries "
                        f"(0..{len(query) - 1})")

    i = args.query_index
    rows, summaries, firsts = [], [], []
    for r in results:
        shown, summary, first = ranked(r, i, query, gallery, args.topk)
        rows.append(shown)
        summaries.append(summary)
        firsts.append(first)
    if len(results) == 1:
        draw_rankings(args.output, rows, f"query {i}: {summaries[0]} (junk removed)")
        print(f"wrote {os.path.abspath(args.output)}: query {i}, {summaries[0]}")
    else:
        # each row named by its file and the folder it is in (a run's, as test.py writes them)
        named = [os.path.join(os.path.basename(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
                 for path in args.result]
        draw_rankings(args.output, rows, f"query {i}, ranked by each result (junk removed)",
                      row_labels=[f"{n}\n{s}" for n, s in zip(named, summaries)])
        print(f"wrote {os.path.abspath(args.output)}: query {i}, "
              + "; ".join(f"{n}: {s}" for n, s in zip(named, summaries)))
    if args.why:
        why(args, query.samples[i][0], gallery.samples[firsts[0]][0], i)


def ranked(r, i, query, gallery, topk):
    """(the tiles of query i's ranking in result r: the query, then its top `topk` gallery images;
    the ranking in words; the gallery row of its first match)."""
    ql, qc = torch.as_tensor(r["query_label"][i:i + 1]), torch.as_tensor(r["query_cam"][i:i + 1])
    gl, gc = torch.as_tensor(r["gallery_label"]), torch.as_tensor(r["gallery_cam"])
    order = ranking(torch.as_tensor(r["query_f"][i:i + 1]), torch.as_tensor(r["gallery_f"]))[0][:topk]
    good, junk = good_and_junk(ql, qc, gl[order], gc[order])
    # the protocol's rank: junk is removed from the ranking, so it takes no rank
    ranks_shown = torch.cumsum(~junk, 0)
    ranks = rank_queries(Side.of(r, "query")[i:i + 1], Side.of(r, "gallery"))
    shown = [(query.samples[i][0], f"query\nid {int(ql)} cam {int(qc)}", "black")]
    for k, j in enumerate(order.tolist()):
        kind = "junk" if junk[k] else "good" if good[k] else "other"
        label = f"{'junk' if kind == 'junk' else int(ranks_shown[k])}\nid {int(gl[j])} cam {int(gc[j])}"
        shown.append((gallery.samples[j][0], label, COLOURS[kind]))
    first, ap = ranks["first"][0], ranks["ap"][0]
    summary = "no good match in the gallery" if first < 0 else f"first good match at rank {first + 1}, AP {ap:.3f}"
    return shown, summary, int(order[0])


def why(args, query_path, match_path, i):
    """--why: the similarity maps of the query and its first match, drawn."""
    from model import load_trained  # here: only --why needs the network
    from reid.evaluation.similarity_maps import similarity_maps

    net, opts = load_trained(run_dir(args.name))
    if opts.get("use_dense"):
        raise UserError(f"--why explains ResNet-50 runs; {args.name} is a DenseNet-121 run (--use_dense)")
    transform = test_transform(int(opts["height"]), int(opts["width"]))
    map_q, map_m, cosine = similarity_maps(net.eval(), *(transform(load_image(p)) for p in (query_path, match_path)))
    draw_similarity(args.why, [query_path, match_path], [map_q, map_m], ["query", "first match"],
                    f"query {i} and its first match: cosine {cosine:.3f}, which each map sums to "
                    f"({map_q.shape[0]} x {map_q.shape[1]} places)")
    print(f"wrote {os.path.abspath(args.why)}: cosine {cosine:.4f}; the query's map sums to {float(map_q.sum()):.4f}, "
          f"the match's to {float(map_m.sum()):.4f}")


if __name__ == "__main__":
    cli.run_main(main)
