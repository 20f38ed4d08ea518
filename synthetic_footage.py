"""Write synthetic footage: the same synthetic people walking past several cameras, as
MOTChallenge sequence folders and H.264 videos with their ground truth (reid.synthetic.footage
draws it and says how).

    python synthetic_footage.py --out demo_data/footage-synthetic
"""
import argparse
import os
import time

from reid import cli
from reid.synthetic.footage import MARKER, PARAMS, make_footage


def main(argv=None):
    parser = cli.parser("Write synthetic footage: the same synthetic people walking past several cameras,\n"
                        "each camera a MOTChallenge sequence folder (img1/, gt/gt.txt, det/det.txt,\n"
                        "seqinfo.ini) and an H.264 video, and a FOOTAGE file saying who each camera shows when.")
    parser.add_argument("--out", required=True,
                        help="folder to create; it must not exist, be empty, or hold footage written by this script "
                             "with the same parameters (then nothing is done)")
    for p in PARAMS:
        parser.add_argument("--" + p.name, metavar=p.name.upper(), type=int, default=p.default, help=p.help)
    parser.add_argument("--video", action=argparse.BooleanOptionalAction, default=True,
                        help="also write each camera as an H.264 video, ROOT/cam1.mp4... (--no-video: the sequence "
                             "folders only)")
    args = parser.parse_args(argv)
    existed = os.path.isfile(os.path.join(args.out, MARKER))
    start = time.perf_counter()
    manifest = make_footage(args.out, video=args.video, **{p.name: getattr(args, p.name) for p in PARAMS})
    listing = "; ".join(f"{camera['name']}: people {cli.shorten([p['id'] for p in camera['people']], 10)}"
                        for camera in manifest["cameras"])
    several = [str(p["id"]) for p in manifest["people"] if len(p["cameras"]) > 1]
    listing += f"; seen by more than one camera: {', '.join(several) or 'nobody'}"
    if existed:
        print(f"{args.out} already holds this synthetic footage: {listing}")
    else:
        print(f"wrote {args.out}: {listing} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    cli.run_main(main)
