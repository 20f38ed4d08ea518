"""export.py: the ONNX graph, run by onnxruntime, gives PyTorch's descriptors (with and without
the flip) at any batch size, and a service that reads image files the README's way gets the very
features test.py wrote."""
import contextlib
import os

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image
from torchvision import transforms

import export
from model import descriptors, load_trained
from reid.cli import UserError
from reid.data import IMAGENET_MEAN, IMAGENET_STD, RESULT_KEYS, image_folder, load_features
from reid.runs import run_dir

HEIGHT, WIDTH = 64, 32  # the tiny run's (conftest.TRAIN)


@contextlib.contextmanager
def working_dir(path):
    cwd = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The tiny run exported with and without the flip, and its network in PyTorch."""
    out = tmp_path_factory.mktemp("exported ü")
    paths = {True: out / "tiny.onnx", False: out / "tiny_noflip.onnx"}
    with working_dir(tiny_run):
        for flip, path in paths.items():
            export.main(["--name", "tiny", "--output", str(path), "--flip" if flip else "--no-flip"])
        net, _ = load_trained(run_dir("tiny"))
    return paths, net.eval()


def run_onnx(path, images):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["features"], {"images": images})[0]


@pytest.mark.parametrize("flip", [True, False])
def test_onnx_matches_pytorch_at_any_batch_size(exported, flip):
    paths, net = exported
    session = onnxruntime.InferenceSession(str(paths[flip]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert session.get_inputs()[0].shape[1:] == [3, HEIGHT, WIDTH]
    assert isinstance(session.get_inputs()[0].shape[0], str)  # a named, dynamic batch dimension
    for n in (1, 5):
        images = torch.rand(n, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(n))
        got = session.run(["features"], {"images": images.numpy()})[0]
        normalised = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)(images)
        if flip:  # test.py's own function
            expected = descriptors(net, [(normalised, None)], torch.device("cpu"))
        else:
            with torch.inference_mode():
                expected = net(normalised)[1].numpy()
        assert got.shape == (n, 512) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=export.TOLERANCE, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_service_gets_test_py_features(exported, tiny_run, prepared_market):
    """Query images read with PIL, resized bicubic and divided by 255 (the README's snippet) give
    the query features of the pytorch_result.mat that test.py wrote for the tiny run."""
    paths, _ = exported
    files = [path for path, _ in image_folder(str(prepared_market), "query", "--test_dir").samples]
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((WIDTH, HEIGHT), Image.BICUBIC),
                                  dtype=np.float32).transpose(2, 0, 1) / 255 for f in files])
    expected = load_features(str(tiny_run / "pytorch_result.mat"), RESULT_KEYS)["query_f"]
    np.testing.assert_allclose(run_onnx(paths[True], images), expected, atol=export.TOLERANCE, rtol=0)


def test_missing_run_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as e:
        export.main(["--name", "nope"])
    message = str(e.value)
    assert "\n" not in message and os.path.join("model", "nope", "") in message
    assert not (tmp_path / "model" / "nope" / "nope.onnx").exists()


def test_missing_package_says_what_to_install(tiny_run, monkeypatch, tmp_path):
    monkeypatch.chdir(tiny_run)
    monkeypatch.setattr(export, "EXPORT_PACKAGES", ("onnx", "no_such_exporter"))
    with pytest.raises(UserError) as e:
        export.main(["--name", "tiny", "--output", str(tmp_path / "tiny.onnx")])
    assert "pip install no_such_exporter" in str(e.value) and not (tmp_path / "tiny.onnx").exists()


def test_disagreeing_export_leaves_no_file(tiny_run, monkeypatch, tmp_path):
    monkeypatch.chdir(tiny_run)
    # a stand-in for the exporter: what matters here is what happens after a failed check
    monkeypatch.setattr(export, "export_onnx", lambda module, height, width, path, opset: open(path, "wb").close())
    monkeypatch.setattr(export, "largest_difference", lambda *args: 0.5)
    with pytest.raises(UserError) as e:
        export.main(["--name", "tiny", "--output", str(tmp_path / "tiny.onnx")])
    assert "5.00e-01" in str(e.value) and "not written" in str(e.value)
    assert os.listdir(tmp_path) == []


def test_too_old_opset_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as e:
        export.main(["--name", "tiny", "--opset", "17"])
    assert "--opset 17" in str(e.value) and str(export.MIN_OPSET) in str(e.value)
