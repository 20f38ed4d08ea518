"""detector.py: the detector's plumbing on a tiny sequence folder (seven 120 x 100 JPEG frames), with
random weights or a fake detector whose boxes are known; and the one-line error when the COCO
weights cannot be downloaded or read. No test downloads anything."""
import os
import socket
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from reid.cli import UserError
from reid.search import detector, footage
from reid.search.footage import MIN_BOX, Box

WIDTH, HEIGHT, LENGTH, FPS = 120, 100, 7, 10
CPU = torch.device("cpu")
MOBILENET = "fasterrcnn_mobilenet_v3_large_fpn"


@pytest.fixture
def sequence(tmp_path):
    """A MOTChallenge sequence folder: img1/000001.jpg... (a dark rectangle moving right) and seqinfo.ini."""
    folder = tmp_path / "Street cam"
    os.makedirs(folder / "img1")
    for n in range(1, LENGTH + 1):
        frame = np.full((HEIGHT, WIDTH, 3), 160, np.uint8)
        frame[20:90, 10 * n:10 * n + 30] = (40, 50, 60)
        Image.fromarray(frame).save(folder / "img1" / f"{n:06d}.jpg")
    (folder / "seqinfo.ini").write_text(f"[Sequence]\nname=Street\nimDir=img1\nframeRate={FPS}\nseqLength={LENGTH}\n"
                                        f"imWidth={WIDTH}\nimHeight={HEIGHT}\n")
    return footage.open_footage(str(folder))


def recorder(seen):
    """A progress wrapper like tqdm, silent, that notes the number of each frame it passes on."""
    def progress(items, total, desc, unit, leave):
        seen.append(("total", total, desc))
        for item in items:
            seen.append(item[0])
            yield item
    return progress


def test_the_detectors_person_label_is_cocos():
    for _, weights in detector.DETECTORS.values():
        assert weights.meta["categories"][detector.COCO_PERSON] == "person"
    with pytest.raises(UserError, match="choose one of fasterrcnn_mobilenet_v3_large_fpn, fasterrcnn_resnet50_fpn_v2"):
        detector.load_detector(CPU, name="yolo")


def test_random_weights_run_through_on_the_strided_frames_and_download_nothing(sequence, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    net = detector.load_detector(CPU, weights=False)
    assert not os.path.exists(tmp_path / "torch") and not net.training
    # smaller inputs than the 800 pixels of COCO, for speed; random weights give every box the same
    # class (not a person), so the class head is nudged to call everything a person
    net.transform.min_size, net.transform.max_size = (HEIGHT,), WIDTH
    with torch.no_grad():
        net.roi_heads.box_predictor.cls_score.bias[detector.COCO_PERSON] += 10
    seen = []
    boxes, summary = detector.detect_people(sequence, net, CPU, stride=3, min_score=0.5, batch=2,
                                            progress=recorder(seen))
    assert seen == [("total", 3, "Street"), 1, 4, 7]
    assert {box.frame for box in boxes} == {1, 4, 7}
    for box in boxes:
        assert box.id == -1 and 0 <= box.conf <= 1
        assert 1 <= box.left and box.left + box.width <= WIDTH + 1 and box.width >= MIN_BOX
        assert 1 <= box.top and box.top + box.height <= HEIGHT + 1 and box.height >= MIN_BOX
    assert summary.startswith(f"Street: person detector on 3 frames (1 in 3), {len(boxes)} boxes of people")


class FakeDetector:
    """The same torchvision-style output for every image, x1, y1, x2, y2 in 0-based coordinates; it
    keeps the batches it was given."""
    OUTPUT = {"boxes": torch.tensor([[9.0, 19.0, 49.0, 99.0],  # a person: kept
                                     [60.0, 10.0, 90.0, 60.0],  # a car (label 3): dropped
                                     [60.0, 10.0, 90.0, 60.0],  # a person scoring below min_score: dropped
                                     [100.0, 50.0, 130.0, 90.0],  # over the right edge: clipped
                                     [-5.0, -3.0, 20.0, 30.0],  # over the top left corner: clipped
                                     [10.0, 10.0, 14.0, 30.0],  # 4 pixels wide: skipped as small
                                     [115.0, 10.0, 130.0, 50.0]]),  # 5 pixels wide once clipped: skipped
              "labels": torch.tensor([1, 3, 1, 1, 1, 1, 1]),
              "scores": torch.tensor([0.9, 0.95, 0.3, 0.8, 0.7, 0.99, 0.99])}

    def __init__(self):
        self.batches = []

    def __call__(self, images):
        self.batches.append(images)
        return [self.OUTPUT for _ in images]


def test_people_only_in_motchallenge_pixels_clipped_to_the_frame(sequence):
    fake, seen = FakeDetector(), []
    boxes, summary = detector.detect_people(sequence, fake, CPU, stride=2, min_score=0.5, batch=3,
                                            progress=recorder(seen))
    assert seen == [("total", 4, "Street"), 1, 3, 5, 7]
    assert [len(images) for images in fake.batches] == [3, 1]
    for n, image in zip((1, 3, 5, 7), [image for images in fake.batches for image in images]):
        rgb = np.asarray(Image.open(os.path.join(sequence.path, "img1", f"{n:06d}.jpg")).convert("RGB"))
        assert image.dtype == torch.float32 and image.shape == (3, HEIGHT, WIDTH)
        np.testing.assert_array_equal(image.numpy(), rgb.transpose(2, 0, 1).astype(np.float32) / 255)
    per_frame = [(-1, 10.0, 20.0, 40.0, 80.0, 0.9), (-1, 101.0, 51.0, 20.0, 40.0, 0.8),
                 (-1, 1.0, 1.0, 20.0, 30.0, 0.7)]
    expected = [Box(n, *rest) for n in (1, 3, 5, 7) for rest in per_frame]
    assert len(boxes) == len(expected)
    for box, want in zip(boxes, expected):
        assert type(box) is Box and box == pytest.approx(want)
    assert summary == ("Street: person detector on 4 frames (1 in 2), 12 boxes of people scoring 0.5 or more kept, "
                       "8 smaller than 8 pixels skipped")


def assert_one_line_naming_the_fix(error, where):
    message = str(error.value)
    assert "\n" not in message and "--detections det.txt" in message
    assert where in message and "machine with internet" in message


def test_weights_that_cannot_be_downloaded_are_one_line_naming_the_fix(tmp_path, monkeypatch):
    # an empty hub cache, whatever this machine holds, and a proxy at a closed local port: the real
    # download path fails at once with or without internet, as it does here without (URLError)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # the port stays bound, never listened on, for the whole test: connections to it are refused, and no other
    # process (another pytest process's torchrun, say) can take it meanwhile
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        for name in ("https_proxy", "HTTPS_PROXY"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{closed.getsockname()[1]}")
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen keeps the proxies it first saw
        with pytest.raises(UserError, match=f"cannot download the COCO weights of the {MOBILENET} person") as error:
            detector.load_detector(CPU)
    assert_one_line_naming_the_fix(error, os.path.join(str(tmp_path / "torch"), "hub", "checkpoints"))


def test_a_download_with_the_wrong_checksum_or_a_broken_copy_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = os.path.join(str(tmp_path / "torch"), "hub", "checkpoints")

    def wrong_checksum(url, dst, hash_prefix=None, progress=True):
        raise RuntimeError(f'invalid hash value (expected "{hash_prefix}", got "0123456789")')
    monkeypatch.setattr(torch.hub, "download_url_to_file", wrong_checksum)
    with pytest.raises(UserError, match="invalid hash value") as error:
        detector.load_detector(CPU)
    assert_one_line_naming_the_fix(error, checkpoints)

    _, weights = detector.DETECTORS[MOBILENET]
    copied = os.path.join(checkpoints, os.path.basename(weights.url))
    os.makedirs(checkpoints, exist_ok=True)
    with open(copied, "wb") as f:
        f.write(b"PK\x03\x04 cut short")
    with pytest.raises(UserError, match="it may be an incomplete copy") as error:
        detector.load_detector(CPU)
    assert_one_line_naming_the_fix(error, copied)
