"""Reduced precision is never trusted silently (issue 40: on Intel CPUs with AMX, bf16 gave
descriptors that changed from call to call and NaN losses at step 2). Every script that runs the
network in bf16 or fp16 first checks, on a few of its own images, that its descriptors agree with
fp32's and with themselves, and otherwise runs in fp32 and says so; a training step whose loss is
not finite in reduced precision is done again in fp32. A wrong device is simulated here by
descriptors that are noisy under autocast, whatever the CPU running the tests."""

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import model
import test as test_stage
import train_new
from conftest import TRAIN, searched
from model import Descriptor, Verification, check_precision
from reid import devices
from reid.cli import UserError
from reid.devices import Arithmetic
from reid.runs import agree_to_stop

REAL_DESCRIPTOR = Descriptor.forward
REAL_VERIFICATION = Verification.forward


def steady(self, images):
    """Descriptors that are the same in any precision (a sound device)."""
    return F.normalize(images.flatten(1)[:, :16].float(), dim=1)


def noisy(forward):
    """`forward`'s descriptors, with fresh noise on every call under autocast (a wrong device)."""
    def noisy_forward(self, images):
        f = forward(self, images)
        if torch.is_autocast_enabled(images.device.type):
            f = F.normalize(f + 0.1 * torch.randn_like(f), dim=1)
        return f
    return noisy_forward


noisy_under_autocast = noisy(REAL_DESCRIPTOR)


def check(monkeypatch, forward, precision="bf16"):
    monkeypatch.setattr(Descriptor, "forward", forward)
    return check_precision(Arithmetic(torch.device("cpu"), precision), torch.nn.Identity(),
                           TensorDataset(torch.randn(4, 3, 8, 4)), "test images")


def test_reduced_precision_is_kept_where_it_agrees_with_fp32(monkeypatch, capsys):
    assert check(monkeypatch, steady) == "bf16"
    out, err = capsys.readouterr()
    assert out.startswith("bf16 checked: on 4 test images, bf16 descriptors are within cosine 1.00000 of fp32's")
    assert err == ""


@pytest.mark.parametrize("wrong", [noisy(steady),
                                   lambda self, images: steady(self, images) * torch.nan])
def test_reduced_precision_that_disagrees_or_gives_nan_falls_back_to_fp32_in_one_line(monkeypatch, capsys, wrong):
    assert check(monkeypatch, wrong) == "fp32"
    assert check(monkeypatch, wrong, "fp16") == "fp32"
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 2
    assert lines[0].startswith("note: --precision bf16 is wrong on this cpu")
    assert "(at least 0.99 and 0.999 needed): running in fp32 from here" in lines[0]
    assert lines[1].startswith("note: --precision fp16 is wrong on this cpu")


def test_fp32_is_not_checked(monkeypatch, capsys):
    assert check(monkeypatch, lambda self, images: 1 / 0, "fp32") == "fp32"
    assert capsys.readouterr() == ("", "")


def test_test_py_on_a_wrong_device_writes_the_descriptors_of_fp32(tiny_run, prepared_market, tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.chdir(tiny_run)
    flags = ["--gpu_ids", "-1", "--name", "tiny", "--test_dir", str(prepared_market), "--num_workers", "0"]
    test_stage.main([*flags, "--output", str(tmp_path / "fp32.mat")])
    monkeypatch.setattr(Descriptor, "forward", noisy_under_autocast)
    capsys.readouterr()
    test_stage.main([*flags, "--precision", "bf16", "--output", str(tmp_path / "bf16.mat")])
    assert "note: --precision bf16 is wrong on this cpu" in capsys.readouterr().err
    fp32, bf16 = (scipy.io.loadmat(tmp_path / f"{p}.mat") for p in ("fp32", "bf16"))
    for key in ("query_f", "gallery_f"):
        np.testing.assert_array_equal(bf16[key], fp32[key])


def test_search_on_a_wrong_device_ranks_as_fp32_does(tiny_run, prepared_market, monkeypatch, capsys):
    query = next((prepared_market / "query").iterdir())
    args = ["--query", query, "--gallery", prepared_market / "gallery", "--no-pictures"]
    searched(capsys, tiny_run, *args)
    with open(tiny_run / "model" / "tiny" / "search" / "results.csv") as f:
        fp32 = f.read()
    monkeypatch.setattr(Descriptor, "forward", noisy_under_autocast)
    _, err = searched(capsys, tiny_run, *args, "--precision", "bf16")
    assert "note: --precision bf16 is wrong on this cpu" in err
    with open(tiny_run / "model" / "tiny" / "search" / "results.csv") as f:
        assert f.read() == fp32


def nan_under_autocast(self, batch):
    """A training step that breaks under autocast as on an AMX CPU: NaN logits, and NaN taken into
    a BatchNorm's running statistics."""
    logits, label, pos_score, neg_score = REAL_VERIFICATION(self, batch)
    if self.training and torch.is_autocast_enabled(logits.device.type):
        self.model.classifier.add_block[1].running_mean.fill_(torch.nan)
        logits = logits * torch.nan
    return logits, label, pos_score, neg_score


def test_a_step_that_is_nan_in_bf16_is_done_again_in_fp32_and_training_goes_on(prepared_market, tmp_path, monkeypatch,
                                                                                capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Arithmetic, "check", lambda self, *args, **kwargs: self.precision)  # whatever this CPU does
    monkeypatch.setattr(Verification, "forward", nan_under_autocast)
    train_new.main([*TRAIN, "--epochs", "2", "--name", "nan", "--data_dir", str(prepared_market),
                    "--precision", "bf16"])
    out, err = capsys.readouterr()
    notes = [line for line in err.splitlines() if "the loss became" in line]
    assert len(notes) == 1 and notes[0].startswith("note: the loss became nan at train 1/2 step 1 under --precision "
                                                   "bf16 and not in fp32, which did this step again: running in fp32")
    assert "epoch 2/2 | train loss" in out
    state = torch.load(tmp_path / "model" / "nan" / "net_last.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_a_loss_that_is_nan_in_reduced_precision_under_torchrun_names_it_and_the_fix():
    with pytest.raises(UserError) as stop:
        agree_to_stop(torch.tensor(torch.nan), "train 1/30 step 2", precision="bf16")
    assert str(stop.value).startswith("the loss became nan at train 1/30 step 2 under --precision bf16, the "
                                      "likely cause")
    assert "--resume with --precision fp32" in str(stop.value) and "lower --lr" not in str(stop.value)
    with pytest.raises(UserError, match="lower --lr"):
        agree_to_stop(torch.tensor(torch.nan), "train 1/30 step 2")


def test_the_check_describes_as_test_py_does_and_leaves_the_network_s_mode(monkeypatch):
    batches = []

    def forward(self, images):
        batches.append((len(images), self.net.training))
        return steady(self, images)
    monkeypatch.setattr(Descriptor, "forward", forward)
    monkeypatch.setattr(model, "CPU_MICRO_PIXELS", 4 * 8 * 4)  # 4 images of 8 x 4 a pass
    network = torch.nn.Identity().train()
    check_precision(Arithmetic(torch.device("cpu"), "bf16"), network, TensorDataset(torch.randn(6, 3, 8, 4)), "images")
    # in eval mode, a few images at a time on a CPU, as descriptors() runs them: fp32, then two reduced calls
    assert batches == [(4, False), (2, False)] * 3 and network.training
    assert devices.AGREE_FP32 < devices.AGREE_REPEAT <= 1
