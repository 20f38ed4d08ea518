"""The README's "see it work in a minute" command, run as written, as a newcomer runs it."""
import csv
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from reid.evaluation.metrics import RESULT_LINE as LINE


def quick_command():
    """The command in the first code block of the README's "See it work in a minute" section."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        section = f.read().split("## See it work in a minute", 1)[1]
    return re.search(r"```bash\n(.*?)\n```", section, re.S)[1].split("#")[0].strip()


def test_the_readme_quick_demo_runs_every_stage(tmp_path):
    for path in glob.glob(os.path.join(REPO, "*.py")) + [os.path.join(REPO, "demo.sh"),
                                                         os.path.join(REPO, "README.md")]:
        shutil.copy(path, tmp_path)
    command = quick_command()
    assert "demo.sh" in command
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    out = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    data, run = tmp_path / "demo_data" / "tiny", tmp_path / "model" / "tiny"
    for folder in ("bounding_box_train", "bounding_box_test", "query", "gt_bbox",
                   "pytorch/train", "pytorch/val", "pytorch/query", "pytorch/gallery", "pytorch/multi-query"):
        assert os.listdir(data / folder), folder
    for name in ("opts.yaml", "net_last.pth", "verif_last.pth", "thresholds.yaml", "train.png", "pytorch_result.mat",
                 "multi_query.mat", "roc.png", "show.png", "search/results.csv"):
        assert (run / name).stat().st_size > 0, name
    for picture in ("train.png", "roc.png", "show.png"):
        assert (run / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
    lines = LINE.findall(out.stdout)
    assert [prefix for prefix, *_ in lines] == ["", "multi "]
    for _, *values in lines:
        assert all(0.0 <= float(v) <= 1.0 for v in values)
    assert "--no-pretrained" in out.stdout + out.stderr
    # the footage stages: person 1's photo from one camera searched in the other camera's video
    with open(run / "footage" / "results.csv", newline="") as f:
        found = list(csv.DictReader(f))
    assert found and all(r["video"].endswith(".mp4") and r["start"] for r in found)
    assert (run / "footage" / "report.html").stat().st_size > 0
    # the time of each of the nine stages, at the end
    times = out.stdout.split("== time per stage\n", 1)[1].splitlines()
    assert len(times) == 9 and all(re.match(r"^\s*\d+\.\d s  \d/9 ", t) for t in times)


def test_demo_py_draws_a_row_for_each_result_file(tiny_run, prepared_market, tmp_path, capsys):
    """demo.py --result before.mat after.mat: one row each, and each row's words are those that
    result gives alone; a result of other images is refused, naming it."""
    import scipy.io
    from PIL import Image

    import demo
    from reid.cli import UserError
    from reid.data import RESULT_KEYS, load_features

    before = str(tiny_run / "pytorch_result.mat")
    r = load_features(before, RESULT_KEYS)
    after = tmp_path / "after" / "pytorch_result.mat"
    after.parent.mkdir()
    # the same images, their descriptors in another order: other rankings
    scipy.io.savemat(after, {**r, "gallery_f": r["gallery_f"][::-1].copy()})
    args = ["--test_dir", str(prepared_market), "--query_index", "1"]
    alone = []
    for k, result in enumerate((before, str(after))):
        demo.main(args + ["--result", result, "--output", str(tmp_path / f"{k}.png")])
        alone.append(capsys.readouterr().out.strip().split(", ", 1)[1])
    demo.main(args + ["--result", before, str(after), "--output", str(tmp_path / "both.png")])
    said = capsys.readouterr().out.strip()
    assert f"pytorch_result.mat: {alone[0]}; after/pytorch_result.mat: {alone[1]}" in said
    assert Image.open(tmp_path / "both.png").height > 1.8 * Image.open(tmp_path / "0.png").height
    scipy.io.savemat(after, {**r, "gallery_f": r["gallery_f"][1:], "gallery_label": r["gallery_label"][1:],
                             "gallery_cam": r["gallery_cam"][1:]})
    with pytest.raises(UserError, match=f"^{re.escape(str(after))} has"):
        demo.main(args + ["--result", before, str(after), "--output", str(tmp_path / "bad.png")])
    assert not (tmp_path / "bad.png").exists()
