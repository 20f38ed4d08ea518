"""The four stages in a row on a tiny prepared tree, each reading the files the previous one wrote."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

import evaluate
import test as test_stage
from conftest import REPO, TRAIN
from conftest import run_script as script
from model import DIFFERENT, SAME, verif_net
from reid.cli import UserError
from reid.data import CALIBRATION_KEYS, HEAD_KEYS, MULTI_KEYS, RESULT_KEYS, load_features, parse_name, save_features
from reid.evaluation.metrics import RESULT_LINE as LINE
from reid.evaluation.verification import load_thresholds

OTHER = re.compile(r"^(multi )?non-interpolated AP \(torchreid, fast-reid\): mAP:(\d\.\d{6}) mINP:(\d\.\d{6})$")


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


def test_training_writes_the_run_folder(run, prepared_market):
    folder = run / "model" / "tiny"
    assert {"opts.yaml", "net_last.pth", "train.png", "train.log"} <= set(os.listdir(folder))
    with open(folder / "opts.yaml") as f:
        opts = yaml.safe_load(f)
    assert opts["nclasses"] == len(os.listdir(prepared_market / "train_all"))
    assert (opts["height"], opts["width"], opts["batchsize"], opts["pretrained"]) == (64, 32, 8, False)
    state = torch.load(folder / "net_last.pth", weights_only=True)
    assert state["classifier.classifier.1.weight"].shape == (opts["nclasses"], 512)
    assert "epoch 1/1 | train loss" in (folder / "train.log").read_text()


def test_written_files_are_readable_like_any_other(run):
    """Files are written to a private temporary name first; the result must not stay private."""
    umask = os.umask(0)
    os.umask(umask)
    for path in ("pytorch_result.mat", "model/tiny/net_last.pth", "model/tiny/opts.yaml", "model/tiny/train.png"):
        assert os.stat(run / path).st_mode & 0o777 == 0o666 & ~umask, path


def test_features_file_for_evaluate(run, prepared_market):
    result = load_features(str(run / "pytorch_result.mat"), RESULT_KEYS)
    for side, split in (("query", "query"), ("gallery", "gallery")):
        n = sum(len(files) for _, _, files in os.walk(prepared_market / split))
        assert result[f"{side}_f"].shape == (n, 512)
        assert len(result[f"{side}_label"]) == len(result[f"{side}_cam"]) == n
        np.testing.assert_allclose(np.linalg.norm(result[f"{side}_f"], axis=1), 1, rtol=1e-5)
    assert {-1, 0} <= set(result["gallery_label"].tolist())
    multi = load_features(str(run / "multi_query.mat"), MULTI_KEYS)
    assert len(multi["mquery_f"]) == sum(len(files) for _, _, files in os.walk(prepared_market / "multi-query"))


def test_evaluate_prints_the_original_lines_and_gpu_version_agrees(run):
    cpu = script("evaluate.py", cwd=run)
    assert cpu.returncode == 0, cpu.stderr
    lines = cpu.stdout.splitlines()
    assert ([bool(LINE.match(line)) for line in lines[:4]] == [True, False, True, False]
            and lines[2].startswith("multi "))
    # then the verification head's answers (the tiny run saved its head): cosine and head side by side
    assert (lines[4].startswith("verification over every query-gallery pair")
            and lines[5].split()[:3] == ["score", "ROC", "AUC"])
    for line, name in zip(lines[6:8], ("cosine", "head")):
        auc, eer, *tars = line.split()[1:]
        assert line.split()[0] == name and all(0 <= float(v) <= 1 for v in (auc, eer, *tars))
    assert lines[8].startswith("ranked by the head: Rank@1:")
    # then how well P(same) is calibrated (training calibrated the tiny run on val against train)
    assert lines[10].startswith("calibration of P(same) over the same pairs") and len(lines) == 21
    assert [line.split(",")[0].strip() + "," + line.split(",")[1].split()[0] for line in lines[12:15]] == \
        ["head,raw", "head,calibrated", "cosine,calibrated"]
    # then the false-accept rate its thresholds (picked on val against train) reach on the test pairs
    assert lines[15].startswith("the run's thresholds") and "people the run was trained on" in lines[15]
    rows = [line.split() for line in lines[17:21]]
    assert [(r[0], float(r[1])) for r in rows] == [("cosine", 0.01), ("cosine", 0.001), ("head", 0.01), ("head", 0.001)]
    assert all(0 <= float(v) <= 1 for r in rows for v in r[3:])
    for line in lines[0:4:2]:
        assert all(0 <= float(v) <= 1 for v in LINE.match(line).groups()[1:])
    for line, prefix in zip(lines[1:4:2], ("", "multi ")):
        values = OTHER.match(line)
        assert values and (values.group(1) or "") == prefix and all(0 <= float(v) <= 1 for v in values.groups()[1:])
    gpu = script("evaluate_gpu.py", cwd=run)
    assert gpu.returncode == 0 and gpu.stdout == cpu.stdout


def test_result_path_flag(run, capsys):
    evaluate.main(["--result", str(run / "pytorch_result.mat")])
    assert LINE.match(capsys.readouterr().out.splitlines()[0])


def test_unknown_epoch_lists_the_saved_ones(run, prepared_market, monkeypatch):
    monkeypatch.chdir(run)
    with pytest.raises(UserError, match="net_7.pth not found.*one of: last"):
        test_stage.main(["--gpu_ids", "-1", "--name", "tiny", "--test_dir", str(prepared_market), "--which_epoch", "7"])


def test_bad_input_is_one_line_without_traceback(tmp_path):
    (tmp_path / "pytorch_result.mat").write_text("not a mat file")
    for args in ([], ["--result", "missing.mat"]):
        out = script("evaluate.py", *args, cwd=tmp_path)
        assert out.returncode != 0
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    out = script("test.py", "--name", "nothing", "--gpu_ids", "-1", cwd=tmp_path)
    assert out.returncode != 0 and "opts.yaml not found" in out.stderr and "Traceback" not in out.stderr


def test_feature_files_that_do_not_line_up(run, tmp_path):
    result = load_features(str(run / "pytorch_result.mat"), RESULT_KEYS)
    cases = {
        "labels": dict(result, gallery_label=result["gallery_label"][:-1]),
        "nan": dict(result, query_f=np.where(np.arange(512) == 3, np.nan, result["query_f"]).astype(np.float32)),
        "dims": dict(result, gallery_f=result["gallery_f"][:, :256]),
        "zero": dict(result, gallery_f=np.where(np.arange(len(result["gallery_f"]))[:, None] == 2, 0,
                                                result["gallery_f"]).astype(np.float32)),
        "empty": dict(result, query_f=np.zeros((0, 512), np.float32), query_label=[], query_cam=[]),
    }
    for name, arrays in cases.items():
        save_features(str(tmp_path / f"{name}.mat"), arrays)
        with pytest.raises(UserError, match=f"{name}.mat"):
            evaluate.main(["--result", str(tmp_path / f"{name}.mat")])
    multi_dir = tmp_path / "multi"
    save_features(str(multi_dir / "pytorch_result.mat"), result)
    save_features(str(multi_dir / "multi_query.mat"),
                  {"mquery_f": np.ones((2, 512), np.float32), "mquery_label": [1], "mquery_cam": [1, 2]})
    with pytest.raises(UserError, match="multi_query.mat has 2 mquery features but 1 labels"):
        evaluate.main(["--result", str(multi_dir / "pytorch_result.mat")])


def test_rerank_flag(run, capsys):
    evaluate.main(["--result", str(run / "pytorch_result.mat"), "--rerank", "--k1", "5", "--k2", "2"])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert LINE.match(lines[0]) and OTHER.match(lines[1]) and lines[2].startswith("multi Rank@1")
    assert "re-ranking, k1=5 k2=2 lambda=0.3" in captured.err
    with pytest.raises(UserError, match="--k1 and --k2"):
        evaluate.main(["--result", str(run / "pytorch_result.mat"), "--rerank", "--k1", "0"])


def test_reader_that_stops_early_gets_no_traceback(run):
    """python evaluate.py | head -1: the pipe closes before evaluate.py prints."""
    child = subprocess.Popen([sys.executable, os.path.join(REPO, "evaluate.py"), "--result", "pytorch_result.mat"],
                             cwd=run, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # long before the child has imported torch and computed anything
    stderr = child.stderr.read().decode()
    assert child.wait() == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


def test_result_file_carries_the_verification_head(run):
    """The head's logit from the result file, (q * w) . g + b, is the network's own verification output."""
    result = load_features(str(run / "pytorch_result.mat"), RESULT_KEYS, optional=HEAD_KEYS)
    verif = verif_net().eval()
    verif.load_state_dict(torch.load(run / "model" / "tiny" / "verif_last.pth", weights_only=True))
    qf, gf = torch.from_numpy(result["query_f"]), torch.from_numpy(result["gallery_f"])
    with torch.no_grad():
        out = verif(qf[:, None, :].expand(-1, len(gf), -1).reshape(-1, 512), gf.repeat(len(qf), 1))
    want = (out[:, SAME] - out[:, DIFFERENT]).reshape(len(qf), len(gf))
    got = (qf * torch.from_numpy(result["verif_w"])) @ gf.T + float(result["verif_b"].reshape(-1)[0])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_thresholds_are_calibrated_for_search(run):
    thresholds = load_thresholds(str(run / "model" / "tiny"))
    assert thresholds["checkpoint"] == "last" and thresholds["optimistic"] is False
    assert thresholds["identities_trained_on"] is True  # no calibration/ in the tree: val against train
    assert thresholds["positive_pairs"] > 0 and thresholds["negative_pairs"] > thresholds["positive_pairs"]
    for score in ("cosine", "head"):
        assert set(thresholds[score]) == {"far=0.01", "far=0.001"}
        assert thresholds[score]["far=0.01"] <= thresholds[score]["far=0.001"]  # a stricter FAR, a higher bar
        assert all(0 <= v <= 1 for v in thresholds[score + "_tar"].values())


def test_held_out_identities_are_measured_like_a_test_set(run, raw_market, tmp_path):
    """prepare.py --hold_out's query and gallery go through test.py and evaluate.py as the
    dataset's own would: every query is a held-out person with a match in another camera."""
    held = tmp_path / "held out"
    assert script("prepare.py", "--download_path", str(raw_market), "--output", str(held), "--hold_out", "3",
                  cwd=REPO).returncode == 0
    result = tmp_path / "held.mat"
    done = script("test.py", "--gpu_ids", "-1", "--name", "tiny", "--test_dir", str(held), "--num_workers", "0",
                  "--output", str(result), cwd=run)
    assert done.returncode == 0, done.stderr
    found = load_features(str(result), RESULT_KEYS)
    with open(held / "split.yaml") as f:
        assert set(found["query_label"].tolist()) == set(yaml.safe_load(f)["held_out_ids"])
    for label, cam in zip(found["query_label"], found["query_cam"]):
        assert ((found["gallery_label"] == label) & (found["gallery_cam"] != cam)).any()
    line = script("evaluate.py", "--result", str(result), cwd=run).stdout.splitlines()[0]
    assert LINE.match(line), line


def test_calibration_on_people_never_trained_on(raw_market, tmp_path):
    """With prepare.py --calibration, training calibrates on those identities' pairs, each counted once."""
    tree = tmp_path / "tree"
    assert script("prepare.py", "--download_path", str(raw_market), "--output", str(tree), "--calibration", "3",
                  cwd=REPO).returncode == 0
    work = tmp_path / "work"
    work.mkdir()
    done = script("train_new.py", *TRAIN, "--epochs", "1", "--name", "calibrated", "--data_dir", str(tree), cwd=work)
    assert done.returncode == 0, done.stderr
    thresholds = load_thresholds(str(work / "model" / "calibrated"))
    with open(tree / "split.yaml") as f:
        ids = yaml.safe_load(f)["calibration_ids"]
    assert thresholds["identities_trained_on"] is False and thresholds["identities"] == ids
    assert "identities in calibration/, never trained on" in thresholds["pairs"]
    names = [n for _, _, files in os.walk(tree / "calibration") for n in files]
    labels, cams = (np.array(a) for a in zip(*(parse_name(n) for n in names)))
    same_id, same_cam = labels[:, None] == labels[None, :], cams[:, None] == cams[None, :]
    assert thresholds["positive_pairs"] == int((same_id & ~same_cam).sum()) // 2  # each pair once
    assert thresholds["negative_pairs"] == int((~same_id).sum()) // 2
    total = thresholds["positive_pairs"] + thresholds["negative_pairs"]
    assert thresholds["prior"] == pytest.approx(thresholds["positive_pairs"] / total)
    assert set(thresholds["cosine_beta"]) == {"a", "b", "c"} and set(thresholds["head_platt"]) == {"a", "b"}

    # calibrate.py does the same for a run that has no calibration
    (work / "model" / "calibrated" / "thresholds.yaml").unlink()
    again = script("calibrate.py", "--gpu_ids", "-1", "--name", "calibrated", "--data_dir", str(tree), "--num_workers",
                   "0", cwd=work)
    assert again.returncode == 0, again.stderr
    def flat(d, prefix=""):
        return {k2: v2 for k, v in d.items() for k2, v2 in (flat(v, f"{prefix}{k}.").items() if isinstance(v, dict)
                                                            else [(prefix + k, v)])}
    again_found, first = flat(load_thresholds(str(work / "model" / "calibrated"))), flat(thresholds)
    assert again_found.keys() == first.keys()
    for key, value in first.items():  # the same pairs; descriptors equal up to float rounding
        assert again_found[key] == (pytest.approx(value, rel=1e-3, abs=1e-4) if isinstance(value, float)
                                    else value), key
    assert "prior" in again.stdout and "thresholds at FAR" in again.stdout

    # test.py hands the calibration to evaluate.py, which measures it on the test pairs
    assert script("test.py", "--gpu_ids", "-1", "--name", "calibrated", "--test_dir", str(tree), "--num_workers", "0",
                  cwd=work).returncode == 0
    result = load_features(str(work / "pytorch_result.mat"), RESULT_KEYS, optional=CALIBRATION_KEYS)
    written = load_thresholds(str(work / "model" / "calibrated"))  # calibrate.py's, which test.py read
    assert result["calibration_prior"].item() == pytest.approx(written["prior"])
    assert result["platt_head"].reshape(-1).tolist() == pytest.approx([written["head_platt"][k] for k in "ab"])
    shown = script("evaluate.py", "--reliability", "reliability.png", cwd=work)
    assert shown.returncode == 0, shown.stderr
    table = shown.stdout[shown.stdout.index("calibration of P(same)"):].splitlines()
    assert f"prior of {thresholds['prior']:.4f}" in table[0]
    rows = {line[:22].strip(): [float(v) for v in line[22:].split()] for line in table[2:5]}
    assert set(rows) == {"head, raw sigmoid", "head, calibrated", "cosine, calibrated"}
    assert all(0 <= ece <= 1 and 0 <= brier <= 1 for ece, brier in rows.values())
    reached = shown.stdout[shown.stdout.index("the run's thresholds"):].splitlines()
    assert "picked on people never trained on" in reached[0]
    assert [float(line.split()[2]) for line in reached[2:4]] == pytest.approx(list(thresholds["cosine"].values()),
                                                                              abs=1e-4)
    assert (work / "reliability.png").stat().st_size > 0


def test_calibrate_refuses_people_the_run_trained_on(run, raw_market, prepared_market, tmp_path):
    tree = tmp_path / "tree"
    assert script("prepare.py", "--download_path", str(raw_market), "--output", str(tree), "--calibration", "2",
                  cwd=REPO).returncode == 0
    before = (run / "model" / "tiny" / "thresholds.yaml").read_text()
    for data_dir, message in ((tree, "were trained on by tiny"), (prepared_market, "calibration does not exist")):
        done = script("calibrate.py", "--gpu_ids", "-1", "--name", "tiny", "--data_dir", str(data_dir), cwd=run)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert message in done.stderr.strip().splitlines()[-1]
    assert (run / "model" / "tiny" / "thresholds.yaml").read_text() == before
