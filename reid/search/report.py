"""The HTML report of a search: one page that a person who was not at the terminal can open and
read. It is a single file: every picture is inside it (a JPEG in a data: URI), the style too,
and it has no script and no outside address of any kind (no fonts, no CDN), so it opens as it
is from a USB stick, with no server and no network.

    title
    summary         one line each: the run, the gallery, how "same person" was decided, the prior
    (search.py --why: under each match, the query and the match over their similarity maps)
    legend          green frame: judged the same person; red frame: judged different
    a section each  per query (per list of pairs across cameras): its heading, a note, the query's
                    picture, then its matches in rows that wrap, each framed green or red with its
                    rank, cosine similarity, P(same) ("-" where there is none), the decision in
                    words and its caption lines; a query without matches says so

Pictures are shrunk to at most MAX_SIDE pixels on their long side (a full-HD frame would make
the page tens of megabytes) and shown at one height, so rows of crops and frames line up.
"""
import base64
import html
import io

from PIL import Image

from reid.runs import atomic_path

MAX_SIDE = 320
JPEG_QUALITY = 85
COLOURS = {True: "#1a9850", False: "#d73027"}  # search.py's: green same, red different
KINDS = {True: "same", False: "different"}
DECISIONS = {True: "same person", False: "different"}

STYLE = f"""
body {{ font-family: sans-serif; margin: 1.5em; color: #222; background: #fff; line-height: 1.35; }}
h1 {{ font-size: 1.4em; margin: 0 0 .4em; }}
h2 {{ font-size: 1.1em; margin: 1.8em 0 .4em; padding-bottom: .2em; border-bottom: 1px solid #ccc; }}
ul.summary {{ margin: 0 0 .8em; padding-left: 1.2em; }}
.legend .same, .legend .different {{ padding: 0 .4em; border-width: 4px; border-style: solid; }}
.row {{ display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }}
figure {{ margin: 0; padding: 3px; border: 5px solid #666; background: #f4f4f4; width: min-content;
         min-width: 170px; }}
figure img, figure .missing {{ display: block; height: 180px; width: auto; margin: 0 auto; }}
figure img + img {{ height: 120px; margin-top: 3px; }}
figure .missing {{ width: 120px; line-height: 180px; text-align: center; color: #666; }}
figcaption {{ font-size: .8em; margin-top: 3px; overflow-wrap: anywhere; }}
.same {{ border-color: {COLOURS[True]}; }}
.different {{ border-color: {COLOURS[False]}; }}
.same .decision {{ color: {COLOURS[True]}; }}
.different .decision {{ color: {COLOURS[False]}; }}
.decision {{ font-weight: bold; }}
p.none {{ font-style: italic; }}
"""

LEGEND = ("<p class=\"legend\"><span class=\"same\">green frame</span> judged the same person as the query, "
          "<span class=\"different\">red frame</span> judged different. Rank: the match's place in the ranking; "
          "cosine: the cosine similarity of the two descriptors; P(same): the calibrated probability that both show "
          "the same person (- where there is none).</p>\n")


def escape(text):
    return html.escape(str(text), quote=True)


def image_tag(image, what):
    """An <img> of `image` as an inline JPEG at most MAX_SIDE pixels on its long side."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"report: the picture of {what} is a {type(image).__name__}, not a PIL image")
    small = image.convert("RGB")  # a copy: the caller's image is left as it was; JPEG has no alpha or palette
    small.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f"<img src=\"data:image/jpeg;base64,{data}\" width=\"{small.width}\" height=\"{small.height}\" "
            f"alt=\"{escape(what)}\">")


def picture(image, what):
    return "<div class=\"missing\">no picture</div>" if image is None else image_tag(image, what)


def hit_figure(hit, heading):
    same = bool(hit["same"])
    p_same = "-" if hit["p_same"] is None else f"{hit['p_same']:.3f}"
    caption = hit["caption"]
    lines = [caption] if isinstance(caption, str) else caption
    text = "".join(f"<br>{escape(line)}" for line in lines)
    what = f"{heading}: rank {hit['rank']}"
    why = "" if hit.get("why") is None else image_tag(hit["why"], f"{what}: why it matches")
    return (f"<figure class=\"hit {KINDS[same]}\">{picture(hit['image'], what)}\n{why}"
            f"<figcaption><span class=\"decision\">rank {escape(hit['rank'])}: {DECISIONS[same]}</span>"
            f"<br>cosine {hit['cosine']:.3f}<br>P(same) {p_same}{text}</figcaption></figure>\n")


def section_html(section):
    heading = section["heading"]
    parts = [f"<section>\n<h2>{escape(heading)}</h2>\n"]
    if section.get("note"):
        parts.append(f"<p class=\"note\">{escape(section['note'])}</p>\n")
    parts.append("<div class=\"row\">\n")
    if section.get("image") is not None:
        parts.append(f"<figure class=\"query\">{image_tag(section['image'], f'{heading}: query')}\n"
                     f"<figcaption><span class=\"decision\">query</span></figcaption></figure>\n")
    parts.extend(hit_figure(hit, heading) for hit in section["hits"])
    parts.append("</div>\n")
    if not section["hits"]:
        parts.append("<p class=\"none\">No matches found.</p>\n")
    parts.append("</section>\n")
    return "".join(parts)


def write_report(path, title, summary, sections):
    """Write the report page to `path` (atomically: an error on the way leaves no file there)
    and return the number of matches on it.

    summary: lines of text. sections: one dict per query, {"heading": str, "image": the query's
    PIL image or None, "note": str, "hits": [{"image": PIL image or None, "caption": lines of
    text, "cosine": float, "p_same": float or None, "same": bool, "rank": int, and optionally
    "why": a PIL image or None}, ...]}."""
    hits = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{escape(title)}</h1>\n")
        if summary:
            f.write("<ul class=\"summary\">\n" + "".join(f"<li>{escape(line)}</li>\n" for line in summary) + "</ul>\n")
        f.write(LEGEND)
        for section in sections:
            f.write(section_html(section))
            hits += len(section["hits"])
        f.write("</body>\n</html>\n")
    return hits
