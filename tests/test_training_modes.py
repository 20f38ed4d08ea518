"""The P x K sampler with in-batch verification pairs, reduced precision, and training and
feature extraction with DistributedDataParallel (2 CPU processes, gloo) under torchrun."""
import os

import numpy as np
import pytest
import scipy.io
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torchvision import transforms

import test as test_stage
import train_new
from conftest import TRAIN, torchrun
from model import build_model, in_batch_pairs, load_trained
from reid import devices
from reid.cli import UserError
from reid.data import load_image, resize
from reid.training import data as training_images
from reid.training import loop, options
from reid.training.samplers import pk_batches

# TRAIN at 32 x 16, for tests of what does not depend on the image size (modes, schedules, averages):
# four times less arithmetic (and bf16 is emulated on CPUs without its instructions)
SMALL = [*TRAIN, "--height", "32", "--width", "16"]


def test_pk_batches_hold_p_identities_of_k_images():
    labels = [i // 5 for i in range(40)] + [8, 9, 9]  # ids 0-7 with 5 images, 8 with 1, 9 with 2
    batches = pk_batches(labels, 12, 3, torch.Generator().manual_seed(0))
    assert batches
    for batch in batches:
        ids = [labels[i] for i in batch]
        assert len(batch) == 12 and len(set(ids)) == 4
        assert all(ids.count(label) == 3 for label in set(ids))
    again = pk_batches(labels, 12, 3, torch.Generator().manual_seed(0))
    assert again == batches                                   # the same epoch, the same batches
    assert pk_batches(labels, 12, 3, torch.Generator().manual_seed(1)) != batches


def test_in_batch_pairs():
    torch.manual_seed(0)
    labels = torch.tensor([3, 3, 5, 5, 5, 7])
    for _ in range(20):
        positive, negative = in_batch_pairs(labels)
        for i in range(len(labels)):
            if i == 5:
                assert positive[i] == i                       # id 7 is alone: its own positive
            else:
                assert positive[i] != i and labels[positive[i]] == labels[i]
            assert labels[negative[i]] != labels[i]


def test_training_images_kept_resized_are_the_items_of_loading_them_again(prepared_market, monkeypatch):
    """In one process, training images are decoded and resized once and kept; the items, random
    augmentation included, are exactly those of decoding the file each time."""
    args = options.parse_args([*TRAIN, "--name", "kept", "--data_dir", str(prepared_market), "--sampler", "pk",
                               "--erasing_p", "0.5", "--color_jitter"])
    dataset = training_images.training_data(args).phases["train"]
    assert isinstance(dataset.loader, training_images.ResizedOnce)
    from_file = transforms.Compose([resize(args.height, args.width), training_images.augment(args)])
    for draw in range(2):  # the second time from memory, with other random numbers
        for i in (0, 5, len(dataset) - 1):
            torch.manual_seed(100 * draw + i)
            kept = dataset[i]
            torch.manual_seed(100 * draw + i)
            path, label = dataset.samples[i]
            assert kept[1] == label and torch.equal(kept[0], from_file(load_image(path)))
    assert len(dataset.loader.kept) == 3
    # too many to keep, or worker processes: decoded each time, as before
    monkeypatch.setattr(training_images, "KEPT_BYTES", 100)
    assert not isinstance(training_images.training_data(args).phases["train"].loader, training_images.ResizedOnce)


# fp16 arithmetic is emulated on CPUs (minutes even at this size): checked where there is a GPU
FP16 = pytest.param(["--precision", "fp16"],
                    marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))


def test_a_cpu_without_bf16_instructions_is_told_to_train_in_fp32(tmp_path, monkeypatch, capsys):
    cpu = torch.device("cpu")
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx f16c fma avx2\n")
    avx512 = tmp_path / "avx512"
    avx512.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512_bf16\n")
    assert not devices.native(cpu, "bf16", avx2) and devices.native(cpu, "bf16", avx512)
    assert devices.native(cpu, "fp32", avx2) and not devices.native(cpu, "fp16", avx512)
    named = tmp_path / "named"
    named.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2\n")
    assert devices.cpu_info(named) == ("AMD EPYC 9R14", {"fpu", "avx2"})
    assert devices.cpu_info(tmp_path / "none") == (None, None) and devices.native(cpu, "bf16", tmp_path / "none")
    # this machine as one without the instructions, whatever it has
    monkeypatch.setitem(devices.CPU_INSTRUCTIONS, "bf16", ("an_instruction_no_cpu_has",))
    devices.note_emulated(cpu, "bf16")
    devices.note_emulated(cpu, "fp32")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--precision bf16" in err[0] and err[0].endswith("pass --precision fp32")


@pytest.mark.parametrize("extra", [["--sampler", "pk", "--instances", "2"], ["--precision", "bf16"], FP16])
def test_other_training_modes_train(prepared_market, tmp_path, monkeypatch, capsys, extra):
    monkeypatch.chdir(tmp_path)
    train_new.main([*SMALL, "--epochs", "1", "--name", "mode", "--data_dir", str(prepared_market), *extra])
    assert "epoch 1/1 | train loss" in capsys.readouterr().out
    state = torch.load(tmp_path / "model" / "mode" / "net_last.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_pk_needs_batches_that_split_into_identities(prepared_market, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="--sampler pk needs --instances"):
        train_new.main([*TRAIN, "--name", "x", "--data_dir", str(prepared_market),
                        "--sampler", "pk", "--instances", "3"])
    # 8 training identities cannot fill a batch of 10 identities x 2 images: no epoch would train
    with pytest.raises(UserError, match="holds 8 identities, fewer than the 10 of a --sampler pk batch"):
        train_new.main([*TRAIN, "--name", "x", "--data_dir", str(prepared_market), "--sampler", "pk", "--batchsize",
                        "20"])


def last_feature_map(net):
    """The shape of ResNet-50's last feature map (layer4's output) for one 64 x 32 image."""
    shapes = []
    hook = net.model.layer4.register_forward_hook(lambda module, args, output: shapes.append(tuple(output.shape)))
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, 3, 64, 32))
    hook.remove()
    return shapes[0]


def test_stride_1_doubles_the_last_feature_map_and_the_run_keeps_it(prepared_market, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flags = [*TRAIN, "--epochs", "1", "--data_dir", str(prepared_market)]
    train_new.main([*flags, "--name", "s1", "--stride", "1"])
    # test.py, search.py and export.py rebuild the network from opts.yaml: no weight tells the strides apart
    net, opts = load_trained(str(tmp_path / "model" / "s1"))
    assert opts["stride"] == 1 and last_feature_map(net) == (1, 2048, 4, 2)
    assert last_feature_map(build_model(dict(opts, stride=2))) == (1, 2048, 2, 1)
    capsys.readouterr()
    train_new.main([*flags, "--name", "next", "--epochs", "0", "--init_from", "s1"])  # without --stride: taken over
    assert "its --stride 1 taken over" in capsys.readouterr().out
    assert load_trained(str(tmp_path / "model" / "next"))[1]["stride"] == 1
    with pytest.raises(UserError, match="--stride 1 changes ResNet-50's last block; DenseNet-121 .* has none"):
        train_new.main([*flags, "--name", "d1", "--stride", "1", "--use_dense"])


def train_hooked(hook, flags, monkeypatch, folder):
    """train_new.main(flags) in `folder`, removing the optimizer `hook` (a registered handle) after it."""
    monkeypatch.chdir(folder)
    try:
        train_new.main(flags)
    finally:
        hook.remove()


def rates_in_training(flags, monkeypatch, folder):
    """Every parameter group's learning rate at each optimizer step of `train_new.main(flags)` run in `folder`."""
    rates = []
    train_hooked(register_optimizer_step_pre_hook(
        lambda optimizer, *_: rates.append([group["lr"] for group in optimizer.param_groups])),
        flags, monkeypatch, folder)
    return rates


def test_warm_up_raises_every_rate_step_by_step_to_its_own(prepared_market, tmp_path, monkeypatch):
    args = options.parse_args(["--warm_epoch", "2", "--decay_epoch", "5"])
    scales = [loop.warm_up(args, epoch, 4)(step) for epoch in range(2) for step in range(4)]
    assert scales == pytest.approx([0.1 + 0.9 * k / 8 for k in range(1, 9)])
    assert scales[-1] == 1.0 and loop.warm_up(args, 2, 4) is None
    # in training: every group's rate at each step (0.1 x lr for a pretrained backbone's), then the schedule's
    rates = rates_in_training([*SMALL, "--epochs", "3", "--decay_epoch", "2", "--warm_epoch", "1", "--name", "warm",
                               "--data_dir", str(prepared_market)], monkeypatch, tmp_path)
    steps = len(rates) // 3
    expected = [0.01 * (0.1 + 0.9 * (k + 1) / steps) for k in range(steps)] + [0.01] * steps + [0.001] * steps
    assert len(rates) == 3 * steps and steps > 1
    assert [r[1] for r in rates] == pytest.approx(expected) and all(len(set(r)) == 1 for r in rates)
    with pytest.raises(UserError, match="--warm_epoch 3: give 0 .* up to --decay_epoch 2"):
        train_new.main([*SMALL, "--decay_epoch", "2", "--warm_epoch", "3",
                        "--name", "x", "--data_dir", str(prepared_market)])


def test_cosine_schedule_falls_along_half_a_cosine_after_its_warm_up(prepared_market, tmp_path, monkeypatch):
    rates = rates_in_training([*SMALL, "--epochs", "3", "--lr_schedule", "cosine", "--warm_epoch", "1",
                               "--decay_epoch", "1", "--name", "cosine", "--data_dir", str(prepared_market)],
                              monkeypatch, tmp_path)
    steps = len(rates) // 3
    # SMALL trains from scratch at lr 0.01, every group alike; --decay_epoch 1 plays no part
    expected = ([0.01 * (0.1 + 0.9 * (k + 1) / steps) for k in range(steps)]
                + [0.01 * 0.75] * steps + [0.01 * 0.25] * steps)
    assert len(rates) == 3 * steps and steps > 1
    assert [r[1] for r in rates] == pytest.approx(expected) and all(len(set(r)) == 1 for r in rates)
    with pytest.raises(UserError, match="--warm_epoch 4: give 0 .* up to --epochs 3"):
        train_new.main([*SMALL, "--epochs", "3", "--lr_schedule", "cosine", "--warm_epoch", "4", "--name", "x",
                        "--data_dir", str(prepared_market)])


def test_ema_saves_the_moving_average_of_every_step_and_resumes_it(prepared_market, tmp_path, monkeypatch):
    # the network's weights and BatchNorm statistics after each step, by a hook on the optimizer
    steps, built, build = [], {}, train_new.build_training

    def keep(*args, **kwargs):
        built["parts"] = build(*args, **kwargs)
        return built["parts"]

    monkeypatch.setattr(train_new, "build_training", keep)
    flags = [*SMALL, "--ema_decay", "0.5", "--data_dir", str(prepared_market)]
    train_hooked(register_optimizer_step_post_hook(lambda *_: steps.append(
        {k: v.detach().clone() for k, v in built["parts"].net.model.state_dict().items()})),
        [*flags, "--epochs", "2", "--name", "ema"], monkeypatch, tmp_path)
    average = steps[0]
    for weights in steps[1:]:
        average = {k: 0.5 * average[k] + 0.5 * v if v.is_floating_point() else v for k, v in weights.items()}
    saved = torch.load(tmp_path / "model" / "ema" / "net_last.pth", weights_only=True)
    floats = [k for k, v in saved.items() if v.is_floating_point()]
    assert len(steps) > 2 and saved.keys() == average.keys()
    assert all(torch.allclose(saved[k], average[k], atol=1e-6) for k in floats)
    assert not all(torch.allclose(saved[k], steps[-1][k], atol=1e-6) for k in floats)
    # one epoch, then a resume to two: the average carries over in state.pth
    train_new.main([*flags, "--epochs", "1", "--name", "halves"])
    train_new.main([*flags, "--epochs", "2", "--name", "halves", "--resume"])
    resumed = torch.load(tmp_path / "model" / "halves" / "net_last.pth", weights_only=True)
    assert all(torch.equal(resumed[k], saved[k]) for k in floats)
    with pytest.raises(UserError, match="--ema_decay 1.0: give 0 .* below 1"):
        train_new.main([*SMALL, "--ema_decay", "1", "--name", "x", "--data_dir", str(prepared_market)])


def test_two_processes_train_in_step_and_write_once(prepared_market, tmp_path, monkeypatch):
    out = torchrun("train_new.py", *TRAIN, "--epochs", "1", "--name", "ddp", "--data_dir", str(prepared_market),
                   cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "x 2 processes" in out.stdout and "weights identical on all 2 processes" in out.stdout
    run = tmp_path / "model" / "ddp"
    assert sorted(os.listdir(run)) == ["net_last.pth", "opts.yaml", "state.pth", "thresholds.yaml", "train.log",
                                       "train.png", "verif_last.pth"]
    assert (run / "train.log").read_text().count("epoch 1/1") == 1  # written by one process only
    # the checkpoint serves a single-process test.py, whose features torchrun's test.py reproduces
    monkeypatch.chdir(tmp_path)
    test_stage.main(["--gpu_ids", "-1", "--name", "ddp", "--test_dir", str(prepared_market), "--num_workers", "0",
                     "--output", "single.mat"])
    out = torchrun("test.py", "--gpu_ids", "-1", "--name", "ddp", "--test_dir", str(prepared_market),
                   "--num_workers", "0", "--output", "shared.mat", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    single, shared = scipy.io.loadmat(tmp_path / "single.mat"), scipy.io.loadmat(tmp_path / "shared.mat")
    for key in ("gallery_f", "query_f", "gallery_label", "gallery_cam", "query_label", "query_cam"):
        np.testing.assert_allclose(shared[key], single[key], atol=1e-5)
