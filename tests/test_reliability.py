"""Interrupted runs, bad data and bad files: nothing is lost, and every failure is one line
naming the file or flag and the fix, with a non-zero exit and no traceback."""
import os
import shutil
import signal
import time

import pytest
import torch
import yaml

import prepare
import test as test_stage
import train_new
from conftest import TRAIN
from conftest import run_script as finish
from conftest import start_script as start
from reid.cli import UserError


def one_clean_line(out):
    """A failure as users must see it: non-zero exit, one line on stderr, no traceback."""
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, out.stderr
    return lines[0]


def wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def weights(path):
    return torch.load(path, weights_only=True)


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(prepared_market, tmp_path_factory):
    """Two epochs trained without interruption."""
    work = tmp_path_factory.mktemp("reference")
    out = finish("train_new.py", *TRAIN, "--epochs", "2", "--name", "run", "--data_dir", str(prepared_market), cwd=work)
    assert out.returncode == 0, out.stderr
    return weights(work / "model" / "run" / "net_last.pth")


def test_sigterm_mid_epoch_then_resume_gives_the_same_weights(prepared_market, reference, tmp_path):
    args = [*TRAIN, "--epochs", "2", "--name", "run", "--data_dir", str(prepared_market)]
    proc = start("train_new.py", *args, cwd=tmp_path)
    wait_for(tmp_path / "model" / "run" / "state.pth", proc)         # epoch 1 is done
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in err and "--resume" in err
    assert not (tmp_path / "model" / "run" / "net_last.pth").exists()
    resumed = finish("train_new.py", *args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert same_weights(weights(tmp_path / "model" / "run" / "net_last.pth"), reference)
    log = (tmp_path / "model" / "run" / "train.log").read_text().splitlines()
    assert [line.split(" |")[0] for line in log] == ["epoch 1/2", "epoch 2/2"]


def test_sigkill_keeps_the_last_state_loadable(prepared_market, reference, tmp_path):
    args = [*TRAIN, "--epochs", "2", "--name", "run", "--data_dir", str(prepared_market)]
    proc = start("train_new.py", *args, cwd=tmp_path)
    state = tmp_path / "model" / "run" / "state.pth"
    wait_for(state, proc)
    proc.kill()
    proc.communicate()
    assert weights(state)["epoch"] >= 1                                  # intact and loadable
    assert not [f for f in os.listdir(state.parent) if f.endswith(".tmp")]
    resumed = finish("train_new.py", *args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert same_weights(weights(tmp_path / "model" / "run" / "net_last.pth"), reference)


def test_a_folder_holding_a_run_is_never_overwritten_silently(tiny_run, prepared_market, tmp_path, monkeypatch):
    shutil.copytree(tiny_run / "model", tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    before = (tmp_path / "model" / "tiny" / "net_last.pth").read_bytes()
    args = [*TRAIN, "--epochs", "1", "--name", "tiny", "--data_dir", str(prepared_market)]
    with pytest.raises(UserError, match="already holds a run; pass --resume .* --overwrite"):
        train_new.main(args)
    with pytest.raises(UserError, match=r"these differ: --lr 0.01 -> 0.5"):
        train_new.main(args[:-2] + ["--lr", "0.5", "--data_dir", str(prepared_market), "--resume"])
    with pytest.raises(UserError, match="contradict"):
        train_new.main(args + ["--resume", "--overwrite"])
    assert (tmp_path / "model" / "tiny" / "net_last.pth").read_bytes() == before
    with pytest.raises(UserError, match="nothing to resume"):
        train_new.main([*TRAIN, "--name", "other", "--data_dir", str(prepared_market), "--resume"])
    # a run saved before an option existed resumes, the option counting as its default
    opts = tmp_path / "model" / "tiny" / "opts.yaml"
    saved = yaml.safe_load(opts.read_text())
    del saved["label_smoothing"]
    opts.write_text(yaml.safe_dump(saved))
    with pytest.raises(UserError, match=r"these differ: --label_smoothing 0.0 -> 0.1"):
        train_new.main(args + ["--label_smoothing", "0.1", "--resume"])
    # resuming a finished run trains nothing more; --overwrite starts afresh
    train_new.main(args + ["--resume"])
    assert (tmp_path / "model" / "tiny" / "train.log").read_text().count("epoch 1/1") == 1
    train_new.main(args + ["--overwrite", "--seed", "1"])
    assert (tmp_path / "model" / "tiny" / "net_last.pth").read_bytes() != before


def test_data_dir_in_the_wrong_layout(raw_market, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="is a raw dataset folder; run python prepare.py"):
        train_new.main([*TRAIN, "--data_dir", str(raw_market)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty/train does not exist"):
        train_new.main([*TRAIN, "--data_dir", str(tmp_path / "empty")])
    (tmp_path / "empty" / "train").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        train_new.main([*TRAIN, "--data_dir", str(tmp_path / "empty")])


def truncate(path):
    data = path.read_bytes()
    path.unlink()  # a new file: never write through a link into someone's raw data
    path.write_bytes(data[: len(data) // 3])


def test_prepare_finds_unreadable_images_first(raw_market, capsys):
    broken = sorted((raw_market / "bounding_box_train").iterdir())[3]
    truncate(broken)
    (raw_market / "query" / "0010_c1s1_000001_01.jpg").write_text("not an image")
    with pytest.raises(UserError) as e:
        prepare.main(["--download_path", str(raw_market)])
    assert "2 image(s) cannot be decoded" in str(e.value) and broken.name in str(e.value)
    assert "--skip_unreadable" in str(e.value)
    assert not (raw_market / "pytorch").exists()
    prepare.main(["--download_path", str(raw_market), "--skip_unreadable"])
    assert "left out 2 image(s)" in capsys.readouterr().err
    assert not list((raw_market / "pytorch").rglob(broken.name))


def test_query_ids_without_gallery_images_are_reported(raw_market, capsys):
    for image in (raw_market / "query").iterdir():
        if image.name.startswith("0010_"):
            image.rename(raw_market / "query" / image.name.replace("0010_", "0099_", 1))
    prepare.main(["--download_path", str(raw_market), "--skip_check"])
    assert "1 query id(s) have no gallery image (0099)" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["train_new.py", "test.py"])
def test_an_image_broken_after_prepare_is_named_not_a_worker_traceback(script, prepared_market, tiny_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared_market, data, copy_function=shutil.copy)
    split = "train" if script == "train_new.py" else "gallery"
    broken = sorted((data / split).rglob("*.jpg"))[2]
    truncate(broken)
    shutil.copytree(tiny_run / "model", tmp_path / "model")
    if script == "train_new.py":
        out = finish(script, *TRAIN[:-4], "--num_workers", "1", "--epochs", "1", "--name", "fresh",
                     "--data_dir", str(data), cwd=tmp_path)
    else:
        out = finish(script, "--gpu_ids", "-1", "--name", "tiny", "--test_dir", str(data), "--num_workers", "1",
                     cwd=tmp_path)
    line = one_clean_line(out)
    assert broken.name in line and "cannot be read as an image" in line


def test_damaged_or_foreign_checkpoints(tiny_run, prepared_market, tmp_path, monkeypatch):
    shutil.copytree(tiny_run / "model", tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "model" / "tiny"
    args = ["--gpu_ids", "-1", "--name", "tiny", "--test_dir", str(prepared_market), "--num_workers", "0"]
    good = run / "net_last.pth"
    state = weights(good)

    (run / "net_9.pth").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(UserError, match="net_9.pth.*truncated or not a checkpoint"):
        test_stage.main(args + ["--which_epoch", "9"])

    torch.save({k: v for k, v in state.items() if not k.startswith("classifier.classifier")}
               | {"classifier.classifier.1.weight": torch.zeros(3, 512),
                  "classifier.classifier.1.bias": torch.zeros(3)},
               run / "net_19.pth")
    with pytest.raises(UserError, match="net_19.pth does not fit the network.*size mismatch"):
        test_stage.main(args + ["--which_epoch", "19"])

    opts = yaml.safe_load((run / "opts.yaml").read_text())
    (run / "opts.yaml").write_text(yaml.safe_dump(dict(opts, use_dense=True)))
    with pytest.raises(UserError, match="net_last.pth does not fit the network"):
        test_stage.main(args)

    torch.save({"weights": torch.zeros(1), "hook": shutil.copy}, run / "net_29.pth")
    with pytest.raises(UserError, match="needs arbitrary code to load.*refused"):
        test_stage.main(args + ["--which_epoch", "29"])

    (run / "opts.yaml").write_text("nclasses: [unclosed")
    with pytest.raises(UserError, match="opts.yaml is not valid YAML"):
        test_stage.main(args)
    (run / "opts.yaml").write_text("just a string")
    with pytest.raises(UserError, match="does not hold the options"):
        test_stage.main(args)


def test_loss_becoming_nan_stops_with_epoch_and_step(prepared_market, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"the loss became (nan|inf) at train 1/1 step \d+; "
                                         r"the last good state is kept"):
        train_new.main([*TRAIN[:-2], "--lr", "1e30", "--epochs", "1", "--name", "nan",
                        "--data_dir", str(prepared_market)])
    assert sorted(os.listdir(tmp_path / "model" / "nan")) == ["opts.yaml"]
