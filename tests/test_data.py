"""File names and feature files: what every stage relies on to label images."""
import numpy as np
import pytest

from reid.cli import UserError
from reid.data import RESULT_KEYS, load_features, parse_name, parse_names, save_features


@pytest.mark.parametrize("name, expected", [
    ("0002_c1s1_000451_03.jpg", (2, 1)),          # Market-1501
    ("1500_c6s3_086567_01.jpg", (1500, 6)),
    ("-1_c3s1_000151_01.jpg", (-1, 3)),           # junk
    ("0000_c1s1_000151_01.jpg", (0, 1)),          # distractor
    ("0001_c2_f0046182.jpg", (1, 2)),             # DukeMTMC-reID
    ("0005_c8_f0046182.jpg", (5, 8)),
    ("some/folder/0002_c1s1_000451_03.jpg", (2, 1)),
])
def test_parse_name(name, expected):
    assert parse_name(name) == expected


@pytest.mark.parametrize("name", ["Thumbs.db", "c1s1_000451_03.jpg", "0002c1s1_000451_03.jpg",
                                  "0002_c0s1_000451_03.jpg", "abcd_c1s1_000451_03.jpg", "0002_x1_000451.jpg"])
def test_names_that_do_not_parse(name):
    assert parse_name(name) is None


def test_parse_names_lists_bad_names():
    labels, cams = parse_names(["0002_c1s1_000451_03.jpg", "-1_c3s1_000151_01.jpg"])
    assert labels.tolist() == [2, -1] and cams.tolist() == [1, 3]
    with pytest.raises(UserError) as e:
        parse_names(["0002_c1s1_000451_03.jpg", "person7.jpg"])
    assert "person7.jpg" in str(e.value) and "expected" in str(e.value)


def test_feature_file_round_trip(tmp_path):
    arrays = {"gallery_f": np.eye(3, 4, dtype=np.float32), "gallery_label": np.array([1, -1, 0]),
              "gallery_cam": np.array([1, 2, 3]), "query_f": np.ones((1, 4), dtype=np.float32),
              "query_label": np.array([1]), "query_cam": np.array([2])}
    path = tmp_path / "pytorch_result.mat"
    save_features(str(path), arrays)
    loaded = load_features(str(path), RESULT_KEYS)
    assert set(loaded) == set(RESULT_KEYS)
    assert loaded["gallery_f"].shape == (3, 4) and loaded["gallery_f"].dtype == np.float32
    assert loaded["gallery_label"].tolist() == [1, -1, 0]
    assert loaded["query_cam"].tolist() == [2]
    assert [p.name for p in tmp_path.iterdir()] == ["pytorch_result.mat"]  # no temporary file left


def test_feature_file_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_features(str(tmp_path / "missing.mat"), RESULT_KEYS)
    text = tmp_path / "notes.mat"
    text.write_text("these are not features")
    with pytest.raises(UserError, match="not a readable .mat"):
        load_features(str(text), RESULT_KEYS)
    partial = tmp_path / "partial.mat"
    save_features(str(partial), {"query_f": np.ones((1, 4), dtype=np.float32)})
    with pytest.raises(UserError, match="lacks gallery_f"):
        load_features(str(partial), RESULT_KEYS)
