"""bench/experiments/real_market.py, the real-image measurement, on a tiny synthetic tree: it
prepares a held-out split, trains, tests and evaluates by the repository's commands, keeps each finished
run as a row named by its experiment, and neither trains a finished run of the experiment again
nor restarts a stopped one."""
import csv
import os
import subprocess
import sys

import torch
from PIL import Image
from torch.utils.data import TensorDataset

from bench import stages
from bench.experiments import real_market
from conftest import REPO
from model import Descriptor
from test_precision import noisy_under_autocast, steady

TINY_RECIPE = ["--", "--epochs", "1", "--height", "32", "--width", "16", "--batchsize", "8", "--num_workers", "0",
               "--gpu_ids", "-1"]


def bench(raw, work, results, *flags):
    return subprocess.run([sys.executable, os.path.join(REPO, "bench", "experiments", "real_market.py"),
                           "--data", str(raw), "--hold_out", "3", "--work", str(work), "--results", str(results),
                           *flags, *TINY_RECIPE],
                          capture_output=True, text=True, cwd=REPO)


def test_bench_measures_held_out_people_and_resumes(raw_market_once, tmp_path):
    work, results = tmp_path / "work", tmp_path / "runs.csv"
    first = bench(raw_market_once, work, results)
    assert first.returncode == 0, first.stderr
    with open(results, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["experiment"], r["config"], r["seed"], r["epochs"]) for r in rows] == [("recipe", "recipe", "0", "1")]
    assert 0 <= float(rows[0]["rank1"]) <= 1 and 0 < float(rows[0]["cosine_auc"]) <= 1
    assert rows[0]["flags"].endswith(" ".join(TINY_RECIPE[1:]))  # the recipe, then what the command line changed
    # the verification columns are evaluate.py's verification table, not the thresholds table after it
    printed = subprocess.run([sys.executable, os.path.join(REPO, "evaluate.py"), "--result",
                              str(work / "model" / "recipe_s0" / "pytorch_result.mat")], capture_output=True,
                             text=True).stdout.splitlines()
    header = next(k for k, line in enumerate(printed) if "ROC AUC" in line and "EER" in line)
    for score, line in zip(("cosine", "head"), printed[header + 1:header + 3]):
        assert line.split() == [score] + [rows[0][f"{score}_{k}"] for k in ("auc", "eer", "tar1e-2", "tar1e-3")]
    assert "3 held-out identities" in first.stdout and "chance level Rank@1" in first.stdout
    assert "| recipe (as above) | 1 |" in first.stdout
    log = (work / "model" / "recipe_s0" / "train.log").read_text()
    assert f" id acc {rows[0]['fit']} " in log.splitlines()[-1]  # the fit: the last epoch's identity accuracy

    reranked = subprocess.run([sys.executable, os.path.join(REPO, "evaluate.py"), "--result",
                               str(work / "model" / "recipe_s0" / "pytorch_result.mat"), "--rerank"],
                              capture_output=True, text=True).stdout
    assert f"Rank@1:{rows[0]['rerank_rank1']} " in reranked and f"mAP:{rows[0]['rerank_mAP']}\n" in reranked

    # finished: nothing is trained again; a row written before the re-ranked columns gets them from its features,
    # and one written before the experiment column is the experiment's the command names (the default, recipe)
    old = [f for f in rows[0] if not f.startswith("rerank_") and f != "experiment"]
    with open(results, "w", newline="") as f:
        writer = csv.DictWriter(f, old, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    again = bench(raw_market_once, work, results)
    assert again.returncode == 0 and "recipe_s0: training" not in again.stdout
    assert "recipe_s0: re-ranked from its features" in again.stdout
    with open(results, newline="") as f:
        assert list(csv.DictReader(f)) == rows
    results.unlink()  # a run whose row was never written (the bench stopped after training) resumes
    resumed = bench(raw_market_once, work, results)
    assert resumed.returncode == 0, resumed.stderr
    assert "recipe_s0: training (resumed)" in resumed.stdout
    assert (work / "model" / "recipe_s0" / "train.log").read_text() == log

    # another experiment, in the same results file: the recipe's run is not its run, nor in its table
    other = bench(raw_market_once, tmp_path / "work_other", results, "--experiment", "other")
    assert other.returncode == 0, other.stderr
    assert "recipe_s0: training in" in other.stdout and "| recipe (as above) | 1 |" in other.stdout
    with open(results, newline="") as f:
        assert [(r["experiment"], r["config"], r["seed"]) for r in csv.DictReader(f)] == [
            ("recipe", "recipe", "0"), ("other", "recipe", "0")]


def test_bench_names_a_folder_without_training_images(tmp_path):
    done = bench(tmp_path, tmp_path / "work", tmp_path / "runs.csv")
    assert done.returncode == 1 and f"--data {tmp_path} holds no bounding_box_train/" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_results_file_written_before_a_column_gains_it(tmp_path, monkeypatch):
    old = [f for f in real_market.FIELDS if f not in ("experiment", "fit")]
    results = tmp_path / "runs.csv"
    results.write_text(",".join(old) + "\n" + ",".join("1" if f == "rank1" else "x" for f in old) + "\n")
    real_market.append_row(str(results), dict.fromkeys(real_market.FIELDS, "2") | {"experiment": "k4"})
    with open(results, newline="") as f:
        rows = list(csv.DictReader(f))
    # such a file held one experiment's runs: its rows take the name of the experiment that writes it next
    assert [(r["experiment"], r["rank1"], r["fit"]) for r in rows] == [("k4", "1", ""), ("k4", "2", "2")]
    assert sorted(os.listdir(tmp_path)) == ["runs.csv"]


def test_the_table_weighs_each_gain_against_the_seeds_spread(monkeypatch):
    runs = {"recipe": ([0.80, 0.82, 0.84], [0.70, 0.71, 0.72]), "alpha0": ([0.76, 0.78, 0.80], [0.68, 0.70, 0.72]),
            "alpha1": ([0.85], [0.75])}
    rows = [{"config": c, "rank1": str(r), "mAP": str(m)} for c, (ranks, maps) in runs.items()
            for r, m in zip(ranks, maps)]
    # by hand: Rank@1 -4.0 points, standard error sqrt(0.02^2/3 + 0.02^2/3) = 0.01633, t = -2.449 on 4 degrees
    # of freedom, two-sided p = 0.070; mAP -1.0 points, t = -0.01 / sqrt(0.01^2/3 + 0.02^2/3) = -0.775.
    # alpha 1 has one seed, no spread: no test for it
    assert real_market.compare(rows, ["recipe", "alpha0", "alpha1"]) == (
        "alpha0 against recipe (3 + 3 seeds, Welch): Rank@1 -4.0 points (t -2.45, p 0.07), "
        "mAP -1.0 points (t -0.77, p 0.5)")


def test_the_recipe_trains_in_bf16_only_where_it_is_native_and_right(monkeypatch, capsys):
    images = TensorDataset(torch.randn(2, 3, 32, 16))
    monkeypatch.setattr(stages, "native", lambda device, wanted: False)
    assert stages.training_precision(images) == "fp32"
    assert "fp32: this CPU has no bf16 instructions" in capsys.readouterr().out
    monkeypatch.setattr(stages, "native", lambda device, wanted: True)
    monkeypatch.setattr(Descriptor, "forward", steady)
    assert stages.training_precision(images) == "bf16"
    assert "bf16 checked: on 2 images" in capsys.readouterr().out
    monkeypatch.setattr(Descriptor, "forward", noisy_under_autocast)  # a device whose bf16 is wrong (issue 40)
    assert stages.training_precision(images) == "fp32"
    assert "--precision bf16 is wrong on this cpu" in capsys.readouterr().err
    for precision in ("bf16", "fp32"):
        options = real_market.flags("recipe", [], precision)
        assert options[options.index("--precision") + 1] == precision
    assert real_market.flags("recipe", ["--precision", "bf16"], "fp32")[-1] == "bf16"  # the command line still wins
    assert real_market.arithmetic("no tree needed", ["--precision", "fp32"]) == "fp32"


def test_the_figure_shows_the_seeds_of_each_configuration_run(monkeypatch, tmp_path):
    rows = [dict.fromkeys(real_market.FIELDS, "1") | {"config": c, "seed": str(s), "rank1": str(0.8 + s / 100),
                                                       "mAP": str(0.7 - s / 100)}
            for c in ("recipe", "alpha0") for s in range(3)]
    figure = tmp_path / "seeds.png"
    real_market.report(rows, ["recipe", "alpha0", "alpha1"], range(3), str(figure))
    with Image.open(figure) as image:
        image.load()  # a whole PNG, not a half-written one
        assert image.format == "PNG"
    assert sorted(os.listdir(tmp_path)) == ["seeds.png"]
