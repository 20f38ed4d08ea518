"""Runs made by the original code (layumi/Person-reID-verification) test and export as they are.
A folder is built here exactly as the original's train.py leaves it (its opts.yaml text, a
state_dict with the unused ImageNet classifier); test.py's features are checked against an
independent implementation of the original's network and descriptor, written below from its
model.py and test.py, and evaluate.py must print the same line on both."""
import hashlib
import os

import numpy as np
import onnxruntime
import pytest
import scipy.io
import torch
import torch.nn as nn
import yaml
from PIL import Image
from torchvision import models
from torchvision.models.resnet import Bottleneck

import test as test_stage
import train_new
from conftest import TRAIN, run_script
from model import Descriptor, ft_net, ft_net_dense, load_trained
from reid.cli import UserError
from reid.data import RESULT_KEYS, load_features
from reid.runs import ORIGINAL_OPTIONS
from reid.training import options

# model/ft_ResNet50/opts.yaml as the original's train.py writes it (yaml.dump of its flags)
ORIGINAL_OPTS = """PCB: false
alpha: 1.0
batchsize: 32
color_jitter: false
data_dir: ../Market/pytorch
erasing_p: 0
gpu_ids: '0'
lr: 0.1
name: ft_ResNet50
train_all: false
use_dense: false
"""
NAME, EPOCH = "ft_ResNet50", "59"
NCLASSES = 7                  # not the 751 of Market-1501: it must be read from the checkpoint
HEIGHT, WIDTH = 256, 128      # the original's input size, which its opts.yaml does not record
TOLERANCE = 1e-5
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


class OriginalNet(nn.Module):
    """The original's ft_net (ResNet-50) or ft_net_dense (DenseNet-121): the same modules under the
    same names, the ImageNet classifier included, and its forward up to the normalised feature."""

    def __init__(self, nclasses, dense=False):
        super().__init__()
        if dense:
            self.model = models.densenet121(weights=None)
            self.model.features.avgpool = nn.AdaptiveAvgPool2d((1, 1))  # appended to features, no ReLU before it
        else:
            self.model = models.resnet50(weights=None)
            self.model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dense = dense
        self.classifier = nn.Module()
        self.classifier.add_block = nn.Sequential(nn.Linear(1024 if dense else 2048, 512), nn.BatchNorm1d(512))
        self.classifier.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(512, nclasses))

    def feature(self, x):
        m = self.model
        if self.dense:
            x = m.features(x)
        else:
            for layer in (m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4, m.avgpool):
                x = layer(x)
        f = self.classifier.add_block(x.view(x.size(0), x.size(1)))
        return f / (f.norm(p=2, dim=1, keepdim=True) + 1e-8)


@torch.no_grad()
def original_descriptor(net, images):
    """The original test.py's descriptor: the feature of the image plus that of its flip, normalised."""
    ff = net.feature(images) + net.feature(images.flip(3))
    return ff / ff.norm(p=2, dim=1, keepdim=True)


def read_image(path):
    """As the original's data_transforms: bicubic resize to 256 x 128, [0, 1], ImageNet normalisation."""
    rgb = Image.open(path).convert("RGB").resize((WIDTH, HEIGHT), Image.BICUBIC)
    x = (np.asarray(rgb, dtype=np.float64) / 255 - MEAN) / STD
    return torch.from_numpy(x.transpose(2, 0, 1).astype(np.float32))


def original_split(net, root):
    """Features, labels and cameras of a split in ImageFolder order, labels and cameras read from
    the file names as the original's get_id does."""
    paths = [os.path.join(root, d, f)
             for d in sorted(os.listdir(root)) for f in sorted(os.listdir(os.path.join(root, d)))]
    names = [os.path.basename(p) for p in paths]
    features = torch.cat([original_descriptor(net, torch.stack([read_image(p) for p in paths[i:i + 16]]))
                          for i in range(0, len(paths), 16)])
    labels = [-1 if n[0:2] == "-1" else int(n[0:4]) for n in names]
    cams = [int(n.split("c")[1][0]) for n in names]
    return features.numpy(), labels, cams


def original_checkpoint(dense=False, images=None):
    """A state_dict as the original saves it: this repository's network (random weights) plus the
    ImageNet classifier it keeps. With `images`, the BatchNorm statistics are those of these images,
    as training leaves them: a random network otherwise maps every image to nearly one direction.
    The residual branches are damped, as a trained ResNet's are: a random ResNet-50 with such
    statistics is chaotic enough for float32 rounding alone to reach 1e-5 in its features."""
    torch.manual_seed(0)
    net = ft_net_dense(NCLASSES, pretrained=False) if dense else ft_net(NCLASSES, pretrained=False)
    for m in net.modules():
        if isinstance(m, Bottleneck):
            nn.init.constant_(m.bn3.weight, 0.2)
    if images is not None:
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.reset_running_stats()
                m.momentum = None  # a plain average over the batches
        with torch.no_grad():
            net.train()(images)
    state = net.state_dict()
    unused = "model.classifier" if dense else "model.fc"
    state[f"{unused}.weight"] = torch.randn(1000, 1024 if dense else 2048) * 0.01
    state[f"{unused}.bias"] = torch.zeros(1000)
    return state


def make_folder(work, opts_text, state, name=NAME):
    folder = work / "model" / name
    folder.mkdir(parents=True)
    (folder / "opts.yaml").write_text(opts_text)
    torch.save(state, folder / f"net_{EPOCH}.pth")
    return folder


def snapshot(folder):
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in sorted(os.listdir(folder))}


def one_clean_line(out):
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


@pytest.fixture(scope="module")
def original(prepared_market, tmp_path_factory):
    """An original run tested by test.py as a user does, and the reference features of the same
    images and weights, in the original's .mat layout."""
    work = tmp_path_factory.mktemp("original run")
    train = prepared_market / "train_all"
    images = [train / d / f for d in sorted(os.listdir(train)) for f in sorted(os.listdir(train / d))[:2]]
    state = original_checkpoint(images=torch.stack([read_image(p) for p in images]))
    folder = make_folder(work, ORIGINAL_OPTS, state)
    before = snapshot(folder)
    out = run_script("test.py", "--name", NAME, "--which_epoch", EPOCH, "--test_dir", str(prepared_market),
                     "--gpu_ids", "-1", "--num_workers", "0", cwd=work)
    assert out.returncode == 0, out.stderr

    reference = OriginalNet(NCLASSES).eval()
    reference.load_state_dict(state)  # strict: the checkpoint has the original network's keys, no more, no less
    result = {}
    for split in ("gallery", "query"):
        f, labels, cams = original_split(reference, str(prepared_market / split))
        result.update({f"{split}_f": f, f"{split}_label": labels, f"{split}_cam": cams})
    (work / "reference").mkdir()
    scipy.io.savemat(str(work / "reference" / "pytorch_result.mat"), result)
    return {"work": work, "folder": folder, "state": state, "before": before, "after_test": snapshot(folder),
            "reference": reference}


def test_the_folder_is_the_originals(original):
    opts = yaml.safe_load(ORIGINAL_OPTS)
    assert set(opts) == ORIGINAL_OPTIONS and "nclasses" not in opts and "height" not in opts
    assert {"model.fc.weight", "model.fc.bias"} <= set(original["state"])


def test_test_py_gives_the_originals_features(original, prepared_market):
    got = load_features(str(original["work"] / "pytorch_result.mat"), RESULT_KEYS)
    expected = load_features(str(original["work"] / "reference" / "pytorch_result.mat"), RESULT_KEYS)
    for key in RESULT_KEYS:
        if key.endswith("_f"):
            assert got[key].shape == expected[key].shape and got[key].shape[1] == 512
            np.testing.assert_allclose(got[key], expected[key], atol=TOLERANCE, rtol=0)
        else:
            np.testing.assert_array_equal(got[key], expected[key])
    # the images must not all look alike to this network, or equal features would prove little
    assert np.abs(got["gallery_f"] @ got["query_f"].T).min() < 0.99


def test_evaluate_prints_the_same_line(original):
    lines = []
    for result in ("pytorch_result.mat", os.path.join("reference", "pytorch_result.mat")):
        out = run_script("evaluate.py", "--result", result, cwd=original["work"])
        assert out.returncode == 0, out.stderr
        lines.append(out.stdout.splitlines()[0])
    assert lines[0] == lines[1] and lines[0].startswith("Rank@1:")


def test_test_py_leaves_the_folder_as_it_was(original):
    assert original["after_test"] == original["before"]


def test_export_gives_the_originals_features(original, prepared_market):
    work, folder = original["work"], original["folder"]
    out = run_script("export.py", "--name", NAME, "--which_epoch", EPOCH, "--format", "onnx", cwd=work)
    assert out.returncode == 0, out.stderr
    after = snapshot(folder)
    assert {f: after[f] for f in original["before"]} == original["before"]
    assert set(after) - set(original["before"]) == {f"{NAME}.onnx"}

    session = onnxruntime.InferenceSession(str(folder / f"{NAME}.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, HEIGHT, WIDTH]
    query = prepared_market / "query"
    paths = [query / d / f for d in sorted(os.listdir(query)) for f in sorted(os.listdir(query / d))][:4]
    rgb = np.stack([np.asarray(Image.open(p).convert("RGB").resize((WIDTH, HEIGHT), Image.BICUBIC),
                               dtype=np.float32).transpose(2, 0, 1) / 255 for p in paths])
    got = session.run(["features"], {"images": rgb})[0]
    expected = original_descriptor(original["reference"], torch.stack([read_image(p) for p in paths])).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)  # export.py's own tolerance


def test_densenet_run_gives_the_originals_features(tmp_path, monkeypatch):
    """use_dense: the original pools DenseNet's last feature map without torchvision's ReLU."""
    state = original_checkpoint(dense=True)
    make_folder(tmp_path, ORIGINAL_OPTS.replace("use_dense: false", "use_dense: true"), state)
    monkeypatch.chdir(tmp_path)
    net, opts = load_trained(os.path.join("model", NAME), EPOCH)
    assert (opts["nclasses"], opts["height"], opts["width"]) == (NCLASSES, HEIGHT, WIDTH)
    reference = OriginalNet(NCLASSES, dense=True).eval()
    reference.load_state_dict(state)
    images = torch.randn(3, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        got = Descriptor(net.eval())(images)
        with_relu = ft_net_dense(NCLASSES, pretrained=False)
        with_relu.load_state_dict(net.state_dict())
        torchvision_way = Descriptor(with_relu.eval())(images)
    expected = original_descriptor(reference, images)
    torch.testing.assert_close(got, expected, atol=TOLERANCE, rtol=0)
    assert (torchvision_way - expected).abs().max() > 100 * TOLERANCE  # the ReLU would change them


def test_pcb_run_is_refused_in_one_line(tmp_path):
    make_folder(tmp_path, ORIGINAL_OPTS.replace("PCB: false", "PCB: true"), {})
    line = one_clean_line(run_script("test.py", "--name", NAME, "--which_epoch", EPOCH, "--gpu_ids", "-1",
                                     cwd=tmp_path))
    assert "PCB" in line and "does not build" in line


@pytest.mark.parametrize("change", ["renamed classifier key", "the other backbone's ImageNet classifier"])
def test_a_genuinely_wrong_key_is_still_refused(original, tmp_path, monkeypatch, change):
    state = dict(original["state"])
    if change == "renamed classifier key":
        state["classifier.classifier.1.wieght"] = state.pop("classifier.classifier.1.weight")
        wrong = "classifier.classifier.1.weight"
    else:
        state["model.classifier.weight"] = torch.zeros(1000, 1024)  # only DenseNet runs keep this one
        wrong = "model.classifier.weight"
    make_folder(tmp_path, ORIGINAL_OPTS, state)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as e:
        load_trained(os.path.join("model", NAME), EPOCH)
    message = str(e.value)
    assert message.startswith(f"net_{EPOCH}.pth does not fit the network") and wrong in message
    assert "\n" not in message


def test_resume_says_the_original_saved_no_state(original, prepared_market):
    line = one_clean_line(run_script("train_new.py", "--name", NAME, "--resume", "--data_dir", str(prepared_market),
                                     "--gpu_ids", "-1", "--num_workers", "0", cwd=original["work"]))
    assert "original code" in line and "no training state" in line
    assert {f: snapshot(original["folder"])[f] for f in original["before"]} == original["before"]


def test_a_train_new_run_that_lost_nclasses_is_still_refused(tmp_path, monkeypatch):
    opts = vars(options.parse_args(["--name", "damaged"]))
    (tmp_path / "model" / "damaged").mkdir(parents=True)
    (tmp_path / "model" / "damaged" / "opts.yaml").write_text(yaml.safe_dump(opts))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"opts.yaml does not hold the options of a train_new.py run \(no nclasses\)"):
        test_stage.main(["--name", "damaged", "--gpu_ids", "-1"])


def test_training_without_train_all_says_how_to_train_as_the_original(prepared_market, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    train_new.main([*TRAIN, "--epochs", "1", "--name", "held_out", "--data_dir", str(prepared_market)])
    notes = [line for line in capsys.readouterr().err.splitlines() if "train_all" in line]
    assert len(notes) == 1 and notes[0].startswith("note: ") and "pass --train_all" in notes[0]
