"""Write a synthetic person re-ID dataset in the raw Market-1501 layout, for trying the pipeline
where Market-1501 cannot be downloaded (reid.synthetic.people draws it and says how).

    python synthetic.py --out demo_data/Market-1501-synthetic
"""
import os
import time

from reid import cli
from reid.synthetic.people import FOLDERS, MARKER, PARAMS, make_market_tree


def main(argv=None):
    parser = cli.parser("Write a synthetic person re-ID dataset in the raw Market-1501 "
                        "layout (bounding_box_train, bounding_box_test, query, gt_bbox).")
    parser.add_argument("--out", required=True,
                        help="folder to create; it must not exist, be empty, or hold a tree written by this "
                             "script with the same parameters (then nothing is done)")
    for p in PARAMS:
        flag = p.flag or p.name
        parser.add_argument("--" + flag, dest=p.name, metavar=flag.upper(), type=int, default=p.default,
                            help=p.help)
    args = parser.parse_args(argv)
    existed = os.path.isfile(os.path.join(args.out, MARKER))
    start = time.perf_counter()
    counts = make_market_tree(args.out, **{p.name: getattr(args, p.name) for p in PARAMS})
    listing = ", ".join(f"{name} {counts[name]}" for name in FOLDERS)
    if existed:
        print(f"{args.out} already holds this synthetic dataset: {listing}")
    else:
        print(f"wrote {args.out}: {listing} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    cli.run_main(main)
