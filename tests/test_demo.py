"""The demo script end to end at tiny size, run as a user runs it."""
import glob
import os
import shutil
import subprocess
import sys

from conftest import REPO
from metrics import RESULT_LINE as LINE


def test_tiny_demo_runs_every_stage(tmp_path):
    for path in glob.glob(os.path.join(REPO, "*.py")) + [os.path.join(REPO, "demo.sh")]:
        shutil.copy(path, tmp_path)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    out = subprocess.run(["bash", "demo.sh", "--tiny"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    data, run = tmp_path / "demo_data" / "tiny", tmp_path / "model" / "tiny"
    for folder in ("bounding_box_train", "bounding_box_test", "query", "gt_bbox",
                   "pytorch/train", "pytorch/val", "pytorch/query", "pytorch/gallery", "pytorch/multi-query"):
        assert os.listdir(data / folder), folder
    for name in ("opts.yaml", "net_last.pth", "train.png", "pytorch_result.mat", "multi_query.mat", "show.png"):
        assert (run / name).stat().st_size > 0, name
    lines = LINE.findall(out.stdout)
    assert [prefix for prefix, *_ in lines] == ["", "multi "]
    for _, *values in lines:
        assert all(0.0 <= float(v) <= 1.0 for v in values)
    assert "--no-pretrained" in out.stdout + out.stderr
