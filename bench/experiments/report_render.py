"""report.py's page as a browser shows it: a sample report of synthetic pictures (person crops,
and whole frames with a box drawn) opened from its file by headless Chromium, with no server.

Chromium loads the page and writes its DOM (--dump-dom) and a screenshot (--screenshot). The
DOM must hold one <img> per picture, each a data: URI, and every heading and caption line as
text (one of them full of <, &, and quotes); the screenshot must show every picture (each is
painted in a colour of its own, looked for in the PNG), the similarity maps of search.py --why
under their matches (a crop under a map all red, one under a map all blue, in their blended
colours) and the green and red frames of the matches judged the same person and different.
Exits 1 naming what failed.

    python bench/experiments/report_render.py                  # in a temporary folder
    python bench/experiments/report_render.py --output out/    # keep report.html and report.png there
"""
import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser

import numpy as np
from PIL import Image, ImageDraw

from bench.stages import machine
from reid.evaluation.pictures import overlay
from reid.search.report import COLOURS, write_report

WINDOW = (1280, 2000)
# One background colour per picture, far from each other, from the frames and from the page's greys.
PAINTS = [(40, 90, 220), (200, 40, 200), (0, 200, 220), (230, 210, 0), (110, 40, 160), (140, 90, 30),
          (250, 150, 200), (0, 100, 120), (20, 20, 110)]
PAINT_TOLERANCE = 24  # JPEG and scaling move a flat colour by a few levels, more at its edges
MIN_PAINT_PIXELS = 2000  # the smallest picture shows about 10,000 pixels of its colour; a broken one none
MIN_WHY_PIXELS = 1000  # a map is shown 120 pixels high under its match: about 3,000 pixels of its colour
MIN_FRAME_PIXELS = 2000  # per framed match: a 5-pixel border around at least 150 x 240 pixels is 3,900


def person(draw, x, y, height):
    """A person standing at (x, y), its feet's middle: a head, a body, two legs."""
    w = height // 4
    draw.ellipse([x - w // 3, y - height, x + w // 3, y - height + 2 * w // 3], fill=(230, 190, 160))
    draw.rectangle([x - w // 2, y - height + 2 * w // 3, x + w // 2, y - height // 2], fill=(60, 60, 60))
    draw.rectangle([x - w // 2, y - height // 2, x - 2, y], fill=(90, 70, 50))
    draw.rectangle([x + 2, y - height // 2, x + w // 2, y], fill=(90, 70, 50))


def crop(paint, width, height):
    image = Image.new("RGB", (width, height), paint)
    person(ImageDraw.Draw(image), width // 2, height - height // 20, height * 8 // 10)
    return image


def frame(paint, width, height):
    """A camera's frame with two people, the one found boxed in white as search.py boxes it."""
    image = Image.new("RGB", (width, height), paint)
    draw = ImageDraw.Draw(image)
    tall = height // 3
    person(draw, width // 4, height * 3 // 4, tall)
    person(draw, width * 2 // 3, height * 4 // 5, tall)
    draw.rectangle([width * 2 // 3 - tall // 5, height * 4 // 5 - tall - 8, width * 2 // 3 + tall // 5,
                    height * 4 // 5 + 8], outline=(255, 255, 255), width=max(2, width // 200))
    return image


def hit(rank, image, same, p_same, cosine, *caption, why=None):
    return {"rank": rank, "image": image, "same": same, "p_same": p_same, "cosine": cosine, "caption": list(caption),
            "why": why}


# search.py --why's pictures: crops under a similarity map, all adding (red) or all taking away (blue)
WHYS = [(PAINTS[0], 1.0), (PAINTS[2], -1.0)]


def why_picture(paint, sign):
    """A crop painted `paint` under a uniform similarity map of sign `sign`, as search.py --why draws it."""
    return overlay(crop(paint, 64, 128), np.full((4, 2), sign), 1.0)


def why_colour(paint, sign):
    """The background colour of why_picture: the paint blended with the map's colour at +-1."""
    return tuple(int(c) for c in np.asarray(why_picture(paint, sign))[2, 2])


def sample_sections():
    """Three queries: four matches (frames and crops of several sizes), two, and none."""
    return [
        {"heading": "Query 1: <suspect> & 'friend'.jpg", "image": crop(PAINTS[0], 64, 128),
         "note": "the 4 best of 212 tracklets",
         "hits": [hit(1, frame(PAINTS[1], 1280, 720), True, 0.974, 0.912, "cam2.mp4", "00:00:03.2 - 00:00:05.9",
                      "frames 33-60", "best frame 41", why=why_picture(*WHYS[0])),
                  hit(2, crop(PAINTS[2], 96, 192), True, 0.811, 0.833, "gallery/0002_c1s1_000151_01.jpg",
                      why=why_picture(*WHYS[1])),
                  hit(3, frame(PAINTS[3], 1920, 1080), False, 0.120, 0.702, 'cam <3> & "east".mp4',
                      "00:01:12.0 - 00:01:14.4", "frames 720-744", "best frame 731"),
                  hit(4, crop(PAINTS[4], 48, 96), False, None, 0.655, "gallery/0009_c2s1_000017_03.jpg")]},
        {"heading": "Query 2: 0001_c1s1_001051_00.jpg", "image": crop(PAINTS[5], 64, 128), "note": "",
         "hits": [hit(1, crop(PAINTS[6], 128, 256), False, 0.034, 0.601, "gallery/b/0007_c5s1_001201_02.jpg"),
                  hit(2, frame(PAINTS[7], 640, 360), True, None, 0.588, "cam1.mp4", "frames 2-9")]},
        {"heading": "Query 3: alone.png", "image": crop(PAINTS[8], 80, 160), "note": "no tracklet above the threshold",
         "hits": []},
    ]


class Page(HTMLParser):
    """What a DOM holds: its <img> sources, its text, and whether it has a <script>."""

    def __init__(self):
        super().__init__()
        self.images, self.text, self.scripts = [], [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))
        self.scripts += tag == "script"

    def handle_data(self, data):
        self.text.append(data)


def find_browser():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(browser, profile, page, *flags):
    """Run headless Chromium on the file `page` (a fresh profile, 60 s at most); its stdout."""
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={profile}", "--virtual-time-budget=5000", *flags,
               pathlib.Path(page).resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode:
        sys.exit(f"error: {browser} failed with exit status {done.returncode}: "
                 f"{(done.stderr.strip().splitlines() or ['no error output'])[-1]}")
    return done.stdout


def pixels_near(image, colour, tolerance):
    return int((np.abs(image - np.array(colour)).max(axis=-1) <= tolerance).sum())


def check(browser, folder, profile):
    """Write the sample report in `folder`, render it with Chromium's profile in `profile`; print
    what was checked and return the failures."""
    sections = sample_sections()
    page, shot = os.path.join(folder, "report.html"), os.path.join(folder, "report.png")
    hits = write_report(page, "Search of <cam1> & \"cam2\"", ["run: tiny", "gallery: footage/"], sections)
    matches = [h for s in sections for h in s["hits"]]
    pictures = sum(s["image"] is not None for s in sections) + sum(h["image"] is not None for h in matches)
    whys = sum(h["why"] is not None for h in matches)
    print(f"report: {hits} matches in {len(sections)} sections, {pictures} pictures, "
          f"{os.path.getsize(page) // 1024} KB")
    failures = []
    raw = open(page, encoding="utf-8").read()
    outside = [word for word in ("http:", "https:", "file:", "url(", "@import") if word in raw]
    if outside:
        failures.append(f"the file names outside addresses: {outside}")

    dom = Page()
    dom.feed(chromium(browser, profile, page, "--dump-dom"))
    text = "".join(dom.text)
    lines = [s["heading"] for s in sections] + [line for h in matches for line in h["caption"]]
    missing = [line for line in lines if line not in text]
    inline = sum(src.startswith("data:image/jpeg;base64,") for src in dom.images)
    print(f"dump-dom: {len(dom.images)} <img> ({inline} data: URIs) for {pictures} pictures and {whys} "
          f"similarity maps, "
          f"{len(lines) - len(missing)} of {len(lines)} headings and caption lines, {dom.scripts} <script>, "
          f"'No matches found.' {text.count('No matches found.')} time(s)")
    if len(dom.images) != pictures + whys or inline != pictures + whys:
        failures.append("the DOM does not hold one inline <img> per picture")
    if missing:
        failures.append(f"text missing from the DOM: {missing}")
    if dom.scripts or text.count("No matches found.") != 1:
        failures.append("a <script> in the DOM, or the query without matches not said so once")

    chromium(browser, profile, page, f"--screenshot={shot}",
             f"--window-size={WINDOW[0]},{WINDOW[1]}")
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    found = [pixels_near(image, paint, PAINT_TOLERANCE) for paint in PAINTS[:pictures]]
    frames = {same: pixels_near(image, tuple(int(COLOURS[same][i:i + 2], 16) for i in (1, 3, 5)), 2)
              for same in (True, False)}
    wanted = {same: MIN_FRAME_PIXELS * sum(h["same"] == same for h in matches) for same in (True, False)}
    shown = sum(n >= MIN_PAINT_PIXELS for n in found)
    mapped = [pixels_near(image, why_colour(*w), PAINT_TOLERANCE) for w in WHYS]
    print(f"screenshot: similarity maps painted in their colours: {mapped} pixels (at least {MIN_WHY_PIXELS} each)")
    if min(mapped) < MIN_WHY_PIXELS:
        failures.append("a similarity map (search.py --why) not shown under its match")
    print(f"screenshot: {image.shape[1]}x{image.shape[0]}; {shown} of {pictures} pictures painted "
          f"(fewest pixels of a picture's colour: {min(found)}, at least {MIN_PAINT_PIXELS} wanted); "
          f"green frame pixels {frames[True]} (at least {wanted[True]}), red {frames[False]} "
          f"(at least {wanted[False]})")
    if shown != pictures:
        failures.append(f"pictures not shown in the screenshot (in page order): "
                        f"{[i + 1 for i, n in enumerate(found) if n < MIN_PAINT_PIXELS]}")
    if frames[True] < wanted[True] or frames[False] < wanted[False]:
        failures.append("too few green or red frame pixels in the screenshot")
    return failures


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--browser", default=None,
                   help="Chromium's binary (not given: chromium or chromium-browser on PATH)")
    p.add_argument("--output", default=None,
                   help="folder to keep report.html and report.png in (not given: a temporary one)")
    args = p.parse_args(argv)
    browser = args.browser or find_browser()
    if browser is None:
        sys.exit("error: no chromium or chromium-browser on PATH: install it (apt-get install chromium) "
                 "or pass --browser")
    version = subprocess.run([browser, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    print(f"{version}; {machine()}")
    with tempfile.TemporaryDirectory() as scratch:
        if args.output:
            os.makedirs(args.output, exist_ok=True)
        failures = check(browser, args.output or scratch, os.path.join(scratch, "profile"))
    if failures:
        print("FAILED: " + "; ".join(failures))
        sys.exit(1)
    print("ok: every picture loaded and shown, every caption in the page, frames in their colours")


if __name__ == "__main__":
    main()
