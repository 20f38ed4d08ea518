"""train_new.py --init_from: a new run starts from a trained run's backbone, bottleneck and
verification head, with an identity classifier made anew for another tree's identities; the
run's network and input size are taken over, and flags that contradict them, or --resume, stop
it with one line."""
import shutil

import pytest
import torch
import yaml

import prepare
import train_new
from conftest import TRAIN
from reid.cli import UserError


def without(flags, *names):
    """`flags` less each of `names` and its value."""
    flags = list(flags)
    for name in names:
        del flags[flags.index(name):flags.index(name) + 2]
    return flags


# the tiny run's flags without its input size, which --init_from takes over
FLAGS = without(TRAIN, "--height", "--width")


@pytest.fixture(scope="module")
def other_tree(raw_market_once, tmp_path_factory):
    """Another tree: 3 of the tiny run's 8 training people held out, 5 left to train on."""
    root = tmp_path_factory.mktemp("other data") / "raw"
    shutil.copytree(raw_market_once, root)
    out = root.parent / "pytorch"
    prepare.main(["--download_path", str(root), "--hold_out", "3", "--output", str(out)])
    return out


def weights(folder, kind="net"):
    return torch.load(folder / f"{kind}_last.pth", weights_only=True)


def one_line(exit_info):
    message = str(exit_info.value)
    assert "\n" not in message
    return message


def test_a_new_run_starts_from_the_trained_weights(tiny_run, other_tree, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    source = tiny_run / "model" / "tiny"
    # 0 epochs: net_last.pth is the network as loaded, before any step
    train_new.main(FLAGS + ["--epochs", "0", "--name", "next", "--data_dir", str(other_tree),
                            "--init_from", str(source)])
    run = tmp_path / "model" / "next"
    before, after = weights(source), weights(run)
    classifier = ("classifier.classifier.1.weight", "classifier.classifier.1.bias")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before if k not in classifier)
    assert before[classifier[0]].shape == (8, 512) and after[classifier[0]].shape == (5, 512)
    assert all(torch.equal(v, weights(run, "verif")[k]) for k, v in weights(source, "verif").items())
    opts = yaml.safe_load((run / "opts.yaml").read_text())
    assert (opts["init_from"], opts["nclasses"], opts["height"], opts["width"], opts["use_dense"]) == \
        (str(source), 5, 64, 32, False)
    assert (f"starting from {source}: backbone and bottleneck of net_last.pth, verification head of verif_last.pth, "
            f"a new identity classifier for 5 ids (the run's had 8); its --height 64 --width 32 taken over") \
        in capsys.readouterr().out


def test_it_trains_and_resumes_without_init_from(tiny_run, other_tree, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = FLAGS + ["--epochs", "1", "--name", "next", "--data_dir", str(other_tree)]
    with pytest.raises(UserError) as e:  # it would train from the other run again, not continue this one
        train_new.main(args + ["--init_from", "tiny", "--resume"])
    assert "--init_from starts a new run from another run's weights and --resume continues" in one_line(e)
    shutil.copytree(tiny_run / "model" / "tiny", tmp_path / "model" / "tiny")
    train_new.main(args + ["--init_from", "tiny"])  # a run's name finds it under model/
    assert "epoch 1/1 | train loss" in capsys.readouterr().out
    # the same command with --resume and without --init_from: the input size taken over stays
    train_new.main(args + ["--resume"])
    assert "has finished its 1 epochs" in capsys.readouterr().out
    opts = yaml.safe_load((tmp_path / "model" / "next" / "opts.yaml").read_text())
    assert (opts["init_from"], opts["height"], opts["width"]) == ("model/tiny", 64, 32)


def test_flags_that_contradict_the_run_stop_it(tiny_run, other_tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = str(tiny_run / "model" / "tiny")
    args = FLAGS + ["--name", "next", "--data_dir", str(other_tree), "--init_from", source]
    with pytest.raises(UserError) as e:
        train_new.main(args + ["--use_dense", "--height", "128", "--width", "32"])
    assert (f"--init_from {source} keeps that run's network and input size, which --use_dense (the run is ResNet-50), "
            f"--height 128 (the run's: 64) contradict; drop them") in one_line(e)
    with pytest.raises(UserError) as e:
        train_new.main(args + ["--stride", "1"])
    assert "--stride 1 (the run's: 2) contradict" in one_line(e)
    with pytest.raises(UserError) as e:
        train_new.main(FLAGS + ["--name", "next", "--data_dir", str(other_tree), "--init_from", "nowhere"])
    assert "--init_from nowhere: neither nowhere/opts.yaml nor model/nowhere/opts.yaml exists" in one_line(e)
    assert not (tmp_path / "model" / "next").exists()
