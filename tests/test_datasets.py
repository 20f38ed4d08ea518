"""prepare.py on tiny raw trees in the other layouts it reads (CUHK03-NP, MSMT17_V1 and _V2,
custom data), built here: the ImageFolder tree each gives, names the later stages parse,
the published-count warning, and the one-line errors."""
import os

import pytest
from PIL import Image

import prepare
from reid.cli import UserError
from reid.data import parse_name
from reid.synthetic.people import MARKER
from test_prepare import snapshot


def draw(root, paths):
    """A tiny image at each path under root (PNG or JPEG by its extension)."""
    for i, path in enumerate(paths):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 16), (i * 37 % 256, 90, 160)).save(root / path)


def tree(out):
    """{split: {id folder: sorted file names}} of a prepared tree."""
    return {split: {pid: sorted(os.listdir(out / split / pid)) for pid in sorted(os.listdir(out / split))}
            for split in sorted(os.listdir(out)) if (out / split).is_dir()}


def check_names(out, cameras):
    """Every prepared file reads, by data.parse_name, as its folder's id and its raw file's camera
    (cameras: raw file name -> camera); a renamed file ends with its raw name."""
    for ids in tree(out).values():
        for folder, names in ids.items():
            for name in names:
                raw = name if name in cameras else name.split("_", 2)[2]
                assert parse_name(name) == (int(folder), cameras[raw]), name


def prepare_main(root, dataset):
    prepare.main(["--download_path", str(root), "--dataset", dataset])
    return root / "pytorch"


def published_warnings(err):
    return [line for line in err.splitlines() if "as published" in line]


CUHK03_NP = ["bounding_box_train/0001_c1_1.png", "bounding_box_train/0001_c2_6.png",
             "bounding_box_train/0002_c1_1.png", "bounding_box_train/0002_c2_7.png", "bounding_box_train/0005_c1_2.png",
             "query/0003_c1_1.png", "query/0003_c2_6.png", "query/0004_c1_2.png",
             "bounding_box_test/0003_c1_2.png", "bounding_box_test/0003_c2_8.png", "bounding_box_test/0004_c2_9.png"]


def test_cuhk03_np_labeled(tmp_path, capsys):
    root = tmp_path / "cuhk03-np" / "labeled"
    draw(root, CUHK03_NP)
    before = snapshot(root)
    out = prepare_main(root, "cuhk03")
    assert tree(out) == {  # Market-like names are kept as they are
        "train_all": {"0001": ["0001_c1_1.png", "0001_c2_6.png"], "0002": ["0002_c1_1.png", "0002_c2_7.png"],
                      "0005": ["0005_c1_2.png"]},
        "val": {"0001": ["0001_c1_1.png"], "0002": ["0002_c1_1.png"]},
        "train": {"0001": ["0001_c2_6.png"], "0002": ["0002_c2_7.png"], "0005": ["0005_c1_2.png"]},
        "query": {"0003": ["0003_c1_1.png", "0003_c2_6.png"], "0004": ["0004_c1_2.png"]},
        "gallery": {"0003": ["0003_c1_2.png", "0003_c2_8.png"], "0004": ["0004_c2_9.png"]}}
    check_names(out, {os.path.basename(p): int(p.split("_c")[1][0]) for p in CUHK03_NP})
    assert snapshot(root) == before
    assert published_warnings(capsys.readouterr().err) == [
        "warning: train_all holds 5 images of 3 ids; CUHK03-NP labeled as published has 7368 images of 767 ids "
        "(incomplete download?)",
        "warning: query holds 3 images of 2 ids; CUHK03-NP labeled as published has 1400 images of 700 ids "
        "(incomplete download?)",
        "warning: gallery holds 3 images of 2 ids; CUHK03-NP labeled as published has 5328 images of 700 ids "
        "(incomplete download?)"]


def test_cuhk03_np_needs_its_labeled_or_detected_folder(tmp_path):
    root = tmp_path / "cuhk03-np"
    draw(root / "labeled", CUHK03_NP)
    draw(root / "detected", CUHK03_NP)
    with pytest.raises(UserError, match=r"holds labeled/ and detected/; pass one of them, "
                                         r"e\.g\. --download_path .*labeled$"):
        prepare_main(root, "cuhk03")
    os.rename(root / "labeled", tmp_path / "mine")
    with pytest.raises(UserError, match="none of CUHK03-NP labeled .a folder named labeled.; CUHK03-NP detected"):
        prepare_main(tmp_path / "mine", "cuhk03")
    assert not (tmp_path / "mine" / "pytorch").exists()


# MSMT17 list lines: <path under train/ or test/> <id>; names <id>_<index>_<camera>_<date><time>_<frame>_<n>[_ex]
MSMT17_LISTS = {
    "list_train.txt": ["0000/0000_000_01_0303morning_0015_0.jpg", "0000/0000_013_04_0303morning_0020_2.jpg",
                       "0001/0001_000_02_0303noon_0100_1.jpg"],
    "list_val.txt": ["0001/0001_004_12_0303afternoon_0008_0_ex.jpg"],
    "list_query.txt": ["0000/0000_000_01_0113morning_0015_0.jpg", "0001/0001_002_15_0113noon_0300_1.jpg"],
    "list_gallery.txt": ["0000/0000_005_07_0113morning_0400_0.jpg", "0001/0001_009_03_0114noon_0020_2.jpg",
                         "0001/0001_010_03_0114noon_0021_1.jpg"]}


def make_msmt17(root, train, test):
    for list_file, paths in MSMT17_LISTS.items():
        folder = train if list_file in ("list_train.txt", "list_val.txt") else test
        draw(root / folder, paths)
        (root / list_file).write_text("".join(f"{p} {int(p[:4])}\n" for p in paths))


@pytest.mark.parametrize("version, train, test", [("V1", "train", "test"), ("V2", "mask_train_v2", "mask_test_v2")])
def test_msmt17(tmp_path, capsys, version, train, test):
    root = tmp_path / f"MSMT17_{version}"
    make_msmt17(root, train, test)
    before = snapshot(root)
    out = prepare_main(root, "msmt17")
    assert tree(out) == {  # renamed <id>_c<camera>_<raw name>: the camera is the name's third field
        "train_all": {"0000": ["0000_c1_0000_000_01_0303morning_0015_0.jpg",
                               "0000_c4_0000_013_04_0303morning_0020_2.jpg"],
                      "0001": ["0001_c12_0001_004_12_0303afternoon_0008_0_ex.jpg",
                               "0001_c2_0001_000_02_0303noon_0100_1.jpg"]},
        "val": {"0000": ["0000_c1_0000_000_01_0303morning_0015_0.jpg"],
                "0001": ["0001_c12_0001_004_12_0303afternoon_0008_0_ex.jpg"]},
        "train": {"0000": ["0000_c4_0000_013_04_0303morning_0020_2.jpg"],
                  "0001": ["0001_c2_0001_000_02_0303noon_0100_1.jpg"]},
        "query": {"0000": ["0000_c1_0000_000_01_0113morning_0015_0.jpg"],
                  "0001": ["0001_c15_0001_002_15_0113noon_0300_1.jpg"]},
        "gallery": {"0000": ["0000_c7_0000_005_07_0113morning_0400_0.jpg"],
                    "0001": ["0001_c3_0001_009_03_0114noon_0020_2.jpg", "0001_c3_0001_010_03_0114noon_0021_1.jpg"]}}
    check_names(out, {os.path.basename(p): int(os.path.basename(p).split("_")[2])
                      for paths in MSMT17_LISTS.values() for p in paths})
    assert snapshot(root) == before
    assert published_warnings(capsys.readouterr().err)[0] == (
        f"warning: train_all holds 4 images of 2 ids; MSMT17_{version} as published has 32621 images of 1041 ids "
        f"(incomplete download?)")


def test_msmt17_errors(tmp_path):
    root = tmp_path / "MSMT17_V1"
    root.mkdir()
    with pytest.raises(UserError, match=r"none of MSMT17_V1 \(a folder holding train/ and test/\); "
                                         r"MSMT17_V2 \(a folder holding mask_train_v2/ and mask_test_v2/\)"):
        prepare_main(root, "msmt17")
    make_msmt17(root, "train", "test")
    (root / "list_val.txt").unlink()
    with pytest.raises(UserError, match=r"lacks list_val\.txt; --download_path must be the raw MSMT17_V1 folder"):
        prepare_main(root, "msmt17")
    (root / "list_val.txt").write_text("0001/0001_004_12_0303afternoon_0008_0_ex.jpg 7\n")
    with pytest.raises(UserError, match=r"1 line\(s\) of .*list_val\.txt give an id other than their file name's: "
                                         r"0001/0001_004_12_0303afternoon_0008_0_ex\.jpg 7"):
        prepare_main(root, "msmt17")
    (root / "list_val.txt").write_text("0001/0001_005_12_0303afternoon_0009_0.jpg 1\n")
    with pytest.raises(UserError, match=r"1 image\(s\) that .*list_val\.txt names are missing: .*0001_005_12"):
        prepare_main(root, "msmt17")
    assert not (root / "pytorch").exists()


def test_custom_cameras_in_names(tmp_path, capsys):
    root = tmp_path / "our cameras"
    draw(root, ["train/0001/a_c1.jpg", "train/0001/b-cam2.png", "train/0002/c3.jpg", "train/0002/x.CAM4.jpg",
                "query/0003/q_c1.jpg", "gallery/0003/g_c2_0001.jpg", "gallery/0003/0003_c2_f0000001.jpg",
                "gallery/-1/junk_c1.jpg", "gallery/0/far_c3.jpg"])
    before = snapshot(root)
    out = prepare_main(root, "custom")
    assert tree(out) == {  # integer folder names are the ids; a name that already parses is kept
        "train_all": {"0001": ["0001_c1_a_c1.jpg", "0001_c2_b-cam2.png"],
                      "0002": ["0002_c3_c3.jpg", "0002_c4_x.CAM4.jpg"]},
        "val": {"0001": ["0001_c1_a_c1.jpg"], "0002": ["0002_c3_c3.jpg"]},
        "train": {"0001": ["0001_c2_b-cam2.png"], "0002": ["0002_c4_x.CAM4.jpg"]},
        "query": {"0003": ["0003_c1_q_c1.jpg"]},
        "gallery": {"-1": ["-1_c1_junk_c1.jpg"], "0000": ["0000_c3_far_c3.jpg"],
                    "0003": ["0003_c2_f0000001.jpg", "0003_c2_g_c2_0001.jpg"]}}
    check_names(out, {"a_c1.jpg": 1, "b-cam2.png": 2, "c3.jpg": 3, "x.CAM4.jpg": 4, "q_c1.jpg": 1, "g_c2_0001.jpg": 2,
                      "0003_c2_f0000001.jpg": 2, "junk_c1.jpg": 1, "far_c3.jpg": 3})
    assert not (out / "identities.csv").exists()
    assert snapshot(root) == before
    assert published_warnings(capsys.readouterr().err) == []  # nothing published to compare with


def test_custom_cameras_csv(tmp_path):
    root = tmp_path / "csv"
    draw(root, ["train/7/img1.jpg", "train/7/img2.jpg", "query/8/img3.jpg", "gallery/8/img4.jpg",
                "gallery/8/img5_c1.jpg"])
    (root / "cameras.csv").write_text("path,camera\ntrain/7/img1.jpg,1\ntrain/7/img2.jpg,2\nquery/8/img3.jpg,1\n"
                                      "gallery/8/img4.jpg,3\ngallery/8/img5_c1.jpg,2\n")
    before = snapshot(root)
    out = prepare_main(root, "custom")
    assert tree(out)["train_all"] == {"0007": ["0007_c1_img1.jpg", "0007_c2_img2.jpg"]}
    assert tree(out)["query"] == {"0008": ["0008_c1_img3.jpg"]}
    assert tree(out)["gallery"] == {"0008": ["0008_c2_img5_c1.jpg", "0008_c3_img4.jpg"]}  # the list wins over the name
    check_names(out, {"img1.jpg": 1, "img2.jpg": 2, "img3.jpg": 1, "img4.jpg": 3, "img5_c1.jpg": 2})
    assert snapshot(root) == before


def test_custom_identity_names_are_numbered_over_all_splits(tmp_path):
    root = tmp_path / "named"
    draw(root, ["train/alice/a_c1.jpg", "train/alice/a_c2.jpg", "train/bob/b_c1.jpg", "train/zoë/z_c1.jpg",
                "query/carol/c_c1.jpg", "query/alice/a_c3.jpg", "gallery/carol/c_c2.jpg", "gallery/alice/a_c4.jpg",
                "gallery/-1/j_c1.jpg"])
    before = snapshot(root)
    out = prepare_main(root, "custom")
    assert (out / "identities.csv").read_text(encoding="utf-8") == "id,name\n-1,-1\n1,alice\n2,bob\n3,carol\n4,zoë\n"
    assert tree(out)["train_all"] == {"0001": ["0001_c1_a_c1.jpg", "0001_c2_a_c2.jpg"], "0002": ["0002_c1_b_c1.jpg"],
                                      "0004": ["0004_c1_z_c1.jpg"]}
    assert tree(out)["query"] == {"0001": ["0001_c3_a_c3.jpg"], "0003": ["0003_c1_c_c1.jpg"]}
    assert tree(out)["gallery"] == {"-1": ["-1_c1_j_c1.jpg"], "0001": ["0001_c4_a_c4.jpg"],
                                    "0003": ["0003_c2_c_c2.jpg"]}
    check_names(out, {"a_c1.jpg": 1, "a_c2.jpg": 2, "b_c1.jpg": 1, "z_c1.jpg": 1, "c_c1.jpg": 1, "a_c3.jpg": 3,
                      "c_c2.jpg": 2, "a_c4.jpg": 4, "j_c1.jpg": 1})
    assert snapshot(root) == before


def test_custom_errors_name_what_is_missing(tmp_path):
    root = tmp_path / "footage"
    draw(root, ["train/0001/a.jpg", "train/0001/b_c1.jpg"])
    with pytest.raises(UserError, match=r"lacks query/, gallery/; .*train/, query/, gallery/; "
                                         r"each as <identity>/<images>"):
        prepare_main(root, "custom")
    draw(root, ["query/0002/q.jpg", "gallery/0002/g_c2.jpg", "gallery/0002/h.jpg", "gallery/0002/cam0.jpg"])
    with pytest.raises(UserError) as e:
        prepare_main(root, "custom")
    message = str(e.value)
    assert message.startswith("4 image(s) carry no camera: train/0001/a.jpg, query/0002/q.jpg, "
                              "gallery/0002/cam0.jpg and 1 more;")
    assert "_c<camera>_" in message and "cameras.csv" in message and "\n" not in message
    assert not (root / "pytorch").exists()
    (root / "cameras.csv").write_text("path,camera\ntrain/0001/a.jpg,1\nquery/0002/q.jpg,2\n"
                                      "gallery/0002/h.jpg,1\ngallery/0002/cam0.jpg,3\n")
    prepare_main(root, "custom")
    with pytest.raises(UserError, match="is a prepared tree; .*, not its pytorch/ tree"):
        prepare_main(root / "pytorch", "custom")


def test_market_counts_are_compared_with_the_published_ones(raw_market, capsys):
    prepare.main(["--download_path", str(raw_market)])
    assert published_warnings(capsys.readouterr().err) == []  # synthetic.py's tree is small on purpose
    (raw_market / MARKER).unlink()
    prepare.main(["--download_path", str(raw_market)])
    warnings = published_warnings(capsys.readouterr().err)
    assert [w.split()[1] for w in warnings] == ["train_all", "query", "gallery"]
    assert "Market-1501 as published has 12936 images of 751 ids (incomplete download?)" in warnings[0]
