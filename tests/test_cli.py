"""What every script tells its user: help with defaults, where the run is, which device runs it."""
import argparse
import os

import pytest
import torch

import demo
import evaluate
import export
import prepare
import search
import synthetic
import test as test_stage
import train_new
from conftest import run_script
from reid import cli, devices
from reid.devices import loader_workers
from reid.training import options

ENTRY_POINTS = {"train_new.py": lambda argv=None: options.parse_args(argv, train_new.__doc__),
                "test.py": test_stage.parse_args, "search.py": search.parse_args,
                "export.py": export.parse_args, "evaluate.py": evaluate.main, "demo.py": demo.main,
                "prepare.py": prepare.main, "synthetic.py": synthetic.main}


def help_text(capsys, script):
    with pytest.raises(SystemExit) as e:
        ENTRY_POINTS[script](["--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare words


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_help_shows_every_default(monkeypatch, capsys, script):
    made = []
    monkeypatch.setattr(cli, "parser", lambda description, make=cli.parser: made.append(make(description)) or made[-1])
    text = help_text(capsys, script)
    flags = [a for a in made[0]._actions if a.option_strings and a.help and a.default not in (None, argparse.SUPPRESS)]
    assert flags
    for flag in flags:  # those without a default (None) say in their help what happens when not given
        assert f"(default: {flag.default})" in text, f"{script} {flag.option_strings[0]}"


def test_the_defaults_people_asked_about(capsys):
    assert "images per forward pass (default: 256)" in help_text(capsys, "test.py")
    assert "not given: 0 on a CPU" in help_text(capsys, "test.py")  # --num_workers
    assert "number of gallery images to show (default: 10)" in help_text(capsys, "demo.py")


def test_loading_workers_default_to_none_on_a_cpu_and_up_to_8_beside_a_gpu():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert loader_workers(None, cpu) == 0
    assert loader_workers(None, gpu) == min(8, os.cpu_count())
    assert loader_workers(3, cpu) == 3 and loader_workers(0, gpu) == 0  # given: as given


def test_the_cuda_note_names_gpu_ids_only_when_given(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.choose_device(None) == torch.device("cpu")
    assert capsys.readouterr().err.strip() == "note: no CUDA GPU here; running on the CPU"
    assert devices.choose_device("0") == torch.device("cpu")
    assert "--gpu_ids 0 asked for CUDA" in capsys.readouterr().err
    assert devices.choose_device("-1") == torch.device("cpu")
    assert capsys.readouterr().err == ""


def test_a_missing_run_names_the_folder_looked_in(tmp_path):
    out = run_script("test.py", "--name", "tiny", "--gpu_ids", "-1", cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert f"{tmp_path}{os.sep}model{os.sep}tiny{os.sep}opts.yaml not found" in out.stderr
    assert "the repository root" in out.stderr
    out = run_script("evaluate.py", cwd=tmp_path)
    assert f"{tmp_path}{os.sep}pytorch_result.mat not found" in out.stderr and "the repository root" in out.stderr
