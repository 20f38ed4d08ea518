"""report.py: one self-contained HTML page per search, every picture inline and shrunk, frames
that say the decision, all text escaped, written atomically; and, where Chromium is installed,
bench/experiments/report_render.py's check that a browser shows it."""
import base64
import io
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from PIL import Image

from conftest import REPO
from reid.search import report


class Page(HTMLParser):
    """The <img> sources, the classes of the <figure>s, every tag and the text of a page."""

    def __init__(self):
        super().__init__()
        self.images, self.figures, self.tags, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "figure":
            self.figures.append(dict(attrs)["class"])

    def handle_data(self, data):
        self.text.append(data)


def parsed(path):
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def picture(width, height, mode="RGB"):
    return Image.new(mode, (width, height), 128)


def hit(rank, image, same=True, p_same=0.9, caption=("cam1.mp4",)):
    return {"rank": rank, "image": image, "caption": list(caption), "cosine": 0.5, "p_same": p_same, "same": same}


def jpeg_size(src):
    prefix = "data:image/jpeg;base64,"
    assert src.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix):], validate=True)))
    assert image.format == "JPEG"
    return image.size


def test_pictures_are_inline_jpegs_shrunk_to_the_long_side(tmp_path):
    sections = [{"heading": "q1", "image": picture(40, 80), "note": "",
                 "hits": [hit(1, picture(1280, 720)), hit(2, picture(50, 100, "RGBA")),
                          hit(3, picture(1000, 2000, "L")), hit(4, picture(320, 200, "P"))]},
                {"heading": "q2", "image": None, "note": "no query picture", "hits": [hit(1, picture(700, 100))]}]
    path = tmp_path / "report.html"
    assert report.write_report(path, "search", ["run: tiny"], sections) == 5
    page = parsed(path)
    assert [jpeg_size(src) for src in page.images] == [(40, 80), (320, 180), (50, 100), (160, 320), (320, 200),
                                                       (320, 46)]
    assert sections[0]["hits"][0]["image"].size == (1280, 720)  # the caller's picture is not shrunk in place


def test_nothing_outside_the_file(tmp_path):
    path = tmp_path / "report.html"
    report.write_report(path, "search", ["gallery: footage/"], [{"heading": "q", "image": picture(8, 16), "note": "",
                                                                 "hits": [hit(1, picture(16, 8))]}])
    text = path.read_text(encoding="utf-8")
    for outside in ("http://", "https://", 'src="/', "file:", "url(", "@import", "<script", "<link"):
        assert outside not in text
    assert all(src.startswith("data:") for src in parsed(path).images)


def test_frames_and_words_say_the_decision(tmp_path):
    path = tmp_path / "report.html"
    hits = [hit(1, picture(8, 16), True, 0.97), hit(2, picture(8, 16), False, None), hit(3, None, True, 0.51)]
    report.write_report(path, "search", [], [{"heading": "q", "image": picture(8, 16), "note": "", "hits": hits}])
    page = parsed(path)
    assert page.figures == ["query", "hit same", "hit different", "hit same"]
    text = "".join(page.text)
    assert "rank 1: same person" in text and "rank 2: different" in text and "rank 3: same person" in text
    assert "P(same) 0.970" in text and "P(same) -" in text and "no picture" in text
    assert "cosine 0.500" in text
    assert len(page.images) == 3  # the query and the first two matches; the third has none
    assert "green" in text and "judged the same person" in text  # the legend


def test_text_is_escaped(tmp_path):
    path = tmp_path / "report.html"
    nasty = '<script>alert("x")</script> & \'quoted\''
    report.write_report(path, f"search {nasty}", [nasty],
                        [{"heading": nasty, "image": picture(8, 16), "note": nasty,
                          "hits": [hit(1, picture(8, 16), caption=[f"cam{nasty}.mp4", "<b>&"])]}])
    raw = path.read_text(encoding="utf-8")
    page = parsed(path)
    assert "script" not in page.tags and "b" not in page.tags
    assert "&lt;script&gt;" in raw and "&lt;b&gt;&amp;" in raw and "<script" not in raw
    text = "".join(page.text)
    # back as written in the <title> and <h1>, the summary, the heading, the note and the caption
    assert text.count(nasty) == 6 and "<b>&" in text


def test_a_query_without_matches_says_so(tmp_path):
    path = tmp_path / "report.html"
    assert report.write_report(path, "search", [], [{"heading": "alone", "image": picture(8, 16), "note": "",
                                                     "hits": []}]) == 0
    page = parsed(path)
    assert "No matches found." in page.text and page.figures == ["query"]


def test_written_atomically(tmp_path):
    path = tmp_path / "report.html"
    good = [{"heading": "q", "image": picture(8, 16), "note": "", "hits": [hit(1, picture(8, 16))]}]
    report.write_report(path, "search", [], good)
    assert os.listdir(tmp_path) == ["report.html"]  # no temporary file left beside it
    before = path.read_bytes()

    bad = good + [{"heading": "q2", "image": "not a picture.jpg", "note": "", "hits": []}]
    with pytest.raises(TypeError, match="q2: query is a str, not a PIL image"):
        report.write_report(path, "search", [], bad)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["report.html"]

    fresh = tmp_path / "fresh.html"
    with pytest.raises(TypeError):
        report.write_report(fresh, "search", [], good + [{"heading": "q2", "image": None, "note": "",
                                                          "hits": [hit(1, b"jpeg bytes")]}])
    assert not fresh.exists() and os.listdir(tmp_path) == ["report.html"]


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(BROWSER is None, reason="no chromium or chromium-browser on PATH (apt-get install chromium)")
def test_chromium_shows_every_picture_and_caption(tmp_path):
    done = subprocess.run([sys.executable, os.path.join(REPO, "bench", "experiments", "report_render.py"),
                           "--browser", BROWSER, "--output", str(tmp_path / "shown é")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "11 <img> (11 data: URIs) for 9 pictures and 2 similarity maps" in done.stdout
    assert "similarity maps painted in their colours" in done.stdout
    assert "16 of 16 headings and caption lines" in done.stdout
    assert "9 of 9 pictures painted" in done.stdout
    assert (tmp_path / "shown é" / "report.png").exists()
