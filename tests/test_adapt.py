"""adapt.py: a run adapted to unlabelled images of new cameras is an ordinary run, its labels are
never read, and bad input ends with one line."""
import os
import re
import shutil

import numpy as np
import torch

from conftest import run_script, torchrun
from reid.synthetic import footage as synthetic_footage

ADAPT = ["--gpu_ids", "-1", "--num_workers", "0", "--rounds", "2", "--within_rounds", "1", "--epochs", "1",
         "--batchsize", "4", "--instances", "2", "--eps", "0.7"]


def camera_folders(prepared_market, root, rename):
    """One folder per camera of the tree's training images: under their own names (which carry their
    person), or under names that say nothing (`rename`); the list of folders."""
    folders = {}
    for number, (folder, _, names) in enumerate(sorted(os.walk(prepared_market / "train_all"))):
        for k, name in enumerate(sorted(names)):
            camera = name.split("_")[1][:2]
            target = root / camera
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(os.path.join(folder, name), target / (f"{(number * 7919 + k * 104729) % 99991:05d}x.jpg"
                                                               if rename else name))
            folders[camera] = str(target)
    return [folders[c] for c in sorted(folders)]


def weights(work, name):
    return torch.load(os.path.join(work, "model", name, "net_last.pth"), weights_only=True)


def test_adapted_run_is_tested_like_any_run_and_renamed_images_adapt_the_same(tiny_run, prepared_market, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(tiny_run / "model" / "tiny", work / "model" / "tiny")
    named = camera_folders(prepared_market, tmp_path / "named", rename=False)
    renamed = camera_folders(prepared_market, tmp_path / "renamed", rename=True)
    for name, folders in (("named", named), ("renamed", renamed)):
        done = run_script("adapt.py", "--source", "tiny", "--name", name, "--images", *folders, *ADAPT, cwd=work)
        assert done.returncode == 0, done.stderr
    assert "round 2/2:" in done.stdout and "across cameras" in done.stdout
    a, b = weights(work, "named"), weights(work, "renamed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with open(work / "model" / "renamed" / "opts.yaml") as f:
        assert "adapted_from: model/tiny" in f.read()
    tested = run_script("test.py", "--name", "renamed", "--test_dir", str(prepared_market), "--gpu_ids", "-1",
                        "--num_workers", "0", cwd=work)
    assert tested.returncode == 0, tested.stderr
    assert os.path.isfile(work / "pytorch_result.mat")


def groups(work, name):
    with np.load(os.path.join(work, "model", name, "groups.npz"), allow_pickle=False) as saved:
        return saved["images"], saved["round_1"]


def test_under_torchrun_each_process_describes_a_share_and_the_groups_are_those_of_one(tiny_run, prepared_market,
                                                                                          tmp_path):
    """Two processes (gloo, CPU) describe half of the images each, group them once and train together:
    the first round's groups (the source run's descriptors) are those of one process, and one
    process reports and writes the run."""
    work = tmp_path / "work"
    shutil.copytree(tiny_run / "model" / "tiny", work / "model" / "tiny")
    cams = camera_folders(prepared_market, tmp_path / "cams", rename=True)
    rounds = ADAPT[:ADAPT.index("--rounds")] + ADAPT[ADAPT.index("--within_rounds"):] + ["--rounds", "1"]
    one = run_script("adapt.py", "--source", "tiny", "--name", "one", "--images", *cams, *rounds, cwd=work)
    assert one.returncode == 0, one.stderr
    two = torchrun("adapt.py", "--source", "tiny", "--name", "two", "--images", *cams, *rounds, cwd=work)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("round 1/1:") == 1 and two.stdout.count("saved ") == 1
    (images_one, labels_one), (images_two, labels_two) = groups(work, "one"), groups(work, "two")
    assert list(images_one) == list(images_two) and np.array_equal(labels_one, labels_two)
    assert os.path.isfile(work / "model" / "two" / "net_last.pth")


def test_a_source_that_is_not_a_run_and_too_few_images_end_with_one_line(tiny_run, prepared_market, tmp_path):
    cams = camera_folders(prepared_market, tmp_path / "cams", rename=True)
    wrong = run_script("adapt.py", "--source", str(tmp_path), "--name", "x", "--images", *cams, *ADAPT,
                       cwd=tiny_run)
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert wrong.stderr.startswith(f"error: --source {tmp_path}: neither") and len(wrong.stderr.splitlines()) == 1
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(os.path.join(cams[0], os.listdir(cams[0])[0]), one / "a.jpg")
    bad = run_script("adapt.py", "--source", "tiny", "--name", "x", "--images", *cams, *ADAPT, "--eps", "1.5",
                     cwd=tiny_run)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == "error: --eps 1.5 is neither a Jaccard distance between 0 and 1 " \
                                                  "(such as 0.5) nor auto"
    few = run_script("adapt.py", "--source", "tiny", "--name", "x", "--images", str(one), *ADAPT, cwd=tiny_run)
    assert few.returncode != 0 and "too few to group" in few.stderr and "Traceback" not in few.stderr
    assert not os.path.exists(tiny_run / "model" / "x" / "net_last.pth")


def test_a_stopped_adaptation_resumes_after_its_last_round(tiny_run, prepared_market, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(tiny_run / "model" / "tiny", work / "model" / "tiny")
    cams = camera_folders(prepared_market, tmp_path / "cams", rename=True)
    rounds = ADAPT[:ADAPT.index("--rounds")] + ADAPT[ADAPT.index("--within_rounds"):]
    # --eps auto: each camera's own, said in the round's line
    first = run_script("adapt.py", "--source", "tiny", "--name", "a", "--images", *cams, *rounds, "--rounds", "1",
                       "--eps", "auto", cwd=work)
    assert first.returncode == 0, first.stderr
    assert re.search(r"round 1/1: .*\(within each camera, eps 0\.\d+( to 0\.\d+)?\)", first.stdout), first.stdout
    again = run_script("adapt.py", "--source", "tiny", "--name", "a", "--images", *cams, *ADAPT, cwd=work)
    assert again.returncode != 0 and "--resume" in again.stderr and "--overwrite" in again.stderr
    resumed = run_script("adapt.py", "--source", "tiny", "--name", "a", "--images", *cams, *ADAPT, "--resume",
                         cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "round 1/2" not in resumed.stdout and "round 2/2" in resumed.stdout
    with open(work / "model" / "a" / "rounds.log") as f:
        assert [line.split(":")[0] for line in f] == ["round 1/1", "round 2/2"]
    assert os.path.isfile(work / "model" / "a" / "thresholds.yaml")
    assert not os.path.exists(work / "model" / "a" / "state.pth")


def test_footage_adapts_from_its_boxes_with_its_tracklets_and_frames(tiny_run, tmp_path):
    root = tmp_path / "footage"
    synthetic_footage.make_footage(str(root), cameras=2, people=4, frames=12, width=160, height=120, fps=5, seed=0)
    work = tmp_path / "work"
    shutil.copytree(tiny_run / "model" / "tiny", work / "model" / "tiny")
    done = run_script("adapt.py", "--source", "tiny", "--name", "f", "--images", str(root / "cam1"),
                      str(root / "cam2"), *ADAPT, cwd=work)
    assert done.returncode == 0, done.stderr
    crops = work / "model" / "f" / "crops"
    assert sorted(os.listdir(crops)) == ["0", "1"] and all(os.listdir(crops / c) for c in ("0", "1"))
    with open(work / "model" / "f" / "thresholds.yaml") as f:
        assert "of the adaptation's groups, no labels" in f.read()
