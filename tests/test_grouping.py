"""reid/grouping.py: adapt.py's pseudo-identities, on hand-made descriptors whose groups are known."""
import numpy as np
import pytest

from reid import grouping


def bunches(sizes, dim=16, spread=0.05, seed=0):
    """Descriptors in bunches around orthogonal directions, L2-normalised; (features, bunch of each)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = np.eye(dim, dtype=np.float32)[labels] + spread * rng.standard_normal((len(labels), dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def test_neighbours_are_the_nearest_by_cosine_exactly_and_by_faiss(monkeypatch):
    x, _ = bunches([30, 30, 30])
    idx, cos = grouping.neighbours(x, 5)
    brute = np.argsort(-(x @ x.T), axis=1, kind="stable")[:, :6]
    assert np.array_equal(np.sort(idx, 1), np.sort(brute, 1))
    assert np.allclose(cos, np.take_along_axis(x @ x.T, idx, 1), atol=1e-5)
    pytest.importorskip("faiss")
    monkeypatch.setattr(grouping, "EXACT_LIMIT", 10)  # the inverted-file search of large groupings
    monkeypatch.setattr(grouping, "IVF_PROBE", 1000)  # every cell searched: exact
    faiss_idx, _ = grouping.neighbours(x, 5)
    assert np.array_equal(np.sort(faiss_idx, 1), np.sort(idx, 1))


def test_jaccard_is_0_for_itself_and_parts_bunches_more_clearly_than_cosine():
    x, labels = bunches([6, 6], spread=0.3)
    knn, cos = grouping.neighbours(x, 8)
    d = grouping.jaccard(x, knn, k2=1)
    assert np.all(d[:, 0] < 1e-9)
    same = (labels[knn] == labels[:, None])[:, 1:]
    d, cos = d[:, 1:], cos[:, 1:]
    assert d[~same].min() > d[same].max()  # every listed pair of two bunches is farther than any of one
    # the gap between the two kinds of pair, in each measure's own range (Jaccard 0-1, cosine -1-1)
    assert d[~same].min() - d[same].max() > (cos[same].min() - cos[~same].max()) / 2


def test_dbscan_groups_two_bunches_and_leaves_the_stray_out():
    x, labels = bunches([5, 5, 1])
    knn, _ = grouping.neighbours(x, 4)
    found = grouping.dbscan(knn, grouping.jaccard(x, knn, k2=1), eps=0.6, min_samples=2)
    assert found.tolist() == [0] * 5 + [1] * 5 + [-1]


def test_a_cannot_pair_splits_a_group_of_two_and_a_must_pair_joins_two_strays():
    x, _ = bunches([2, 1, 1])
    knn, _ = grouping.neighbours(x, 3)
    d = grouping.jaccard(x, knn, k2=1)
    assert grouping.dbscan(knn, d, 0.6, 2).tolist() == [0, 0, -1, -1]
    assert grouping.dbscan(knn, d, 0.6, 2, cannot=(np.array([0]), np.array([1]))).tolist() == [-1] * 4
    assert grouping.dbscan(knn, d, 0.6, 2, must=(np.array([2]), np.array([3]))).tolist() == [0, 0, 1, 1]


def test_a_border_image_joins_its_nearest_core_group():
    # images 0-3 are cores (each within eps of 3 others); image 4 has only image 0 within eps
    knn = np.array([[0, 1, 2, 3, 4], [1, 0, 2, 3, 4], [2, 0, 1, 3, 4], [3, 0, 1, 2, 4], [4, 0, 1, 2, 3]])
    d = np.array([[0, .1, .1, .1, .2], [0, .1, .1, .1, .9], [0, .1, .1, .1, .9], [0, .1, .1, .1, .9],
                  [0, .2, .9, .9, .9]])
    assert grouping.dbscan(knn, d, eps=0.5, min_samples=4).tolist() == [0, 0, 0, 0, 0]
    assert grouping.dbscan(knn, d, eps=0.15, min_samples=4).tolist() == [0, 0, 0, 0, -1]


def test_within_cameras_no_group_spans_two_cameras_and_across_they_may():
    x, labels = bunches([4, 4, 4, 4])
    cameras = np.array([0, 0, 1, 1] * 4)  # each bunch (person) seen by both cameras
    within = grouping.pseudo_identities(x, cameras, across=False, eps=0.6, k1=3, k2=1, min_samples=2)
    assert (within >= 0).all()
    for g in np.unique(within):
        assert len(np.unique(cameras[within == g])) == 1 and len(np.unique(labels[within == g])) == 1
    assert len(np.unique(within)) == 8
    across = grouping.pseudo_identities(x, cameras, across=True, eps=0.6, k1=3, k2=1, min_samples=2)
    assert len(np.unique(across)) == 4 and all(len(np.unique(labels[across == g])) == 1 for g in np.unique(across))


def test_relabel_numbers_groups_by_first_appearance():
    assert grouping.relabel(np.array([7, -1, 3, 7, 3, 9])).tolist() == [0, -1, 1, 0, 1, 2]


def test_footage_links_reach_the_grouping_of_each_camera_in_its_own_numbering():
    # camera 0: images 0-1 (one bunch); camera 1: images 2-3 (another bunch) and 4-5 (a third)
    x, _ = bunches([2, 2, 2])
    cameras = np.array([0, 0, 1, 1, 1, 1])
    plain = grouping.pseudo_identities(x, cameras, across=False, eps=0.6, k1=3, k2=1, min_samples=2)
    assert plain.tolist() == [0, 0, 1, 1, 2, 2]
    # a frame of camera 1 shows images 2 and 3 apart; a tracklet of camera 1 holds images 3 and 4
    linked = grouping.pseudo_identities(x, cameras, across=False, eps=0.6, k1=3, k2=1, min_samples=2,
                                        must=(np.array([3]), np.array([4])), cannot=(np.array([2]), np.array([3])))
    assert linked[2] == -1 and linked[3] == linked[4] == linked[5] != linked[0]


def test_no_group_holds_both_images_of_a_cannot_pair_however_they_are_chained():
    # a chain 0 - 1 - 2 - 3 of close pairs (each image's neighbours its chain neighbours); 0 and 3 are on one frame
    knn = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 3], [3, 2, 1]])
    d = np.array([[0, .1, .9], [0, .1, .3], [0, .3, .2], [0, .2, .9]])
    assert grouping.dbscan(knn, d, eps=0.5, min_samples=2).tolist() == [0, 0, 0, 0]
    apart = grouping.dbscan(knn, d, eps=0.5, min_samples=2, cannot=(np.array([0]), np.array([3])))
    # the farthest link of the chain (1 - 2, at 0.3) is the one left out
    assert apart.tolist() == [0, 0, 1, 1]


def test_automatic_eps_is_the_median_distance_to_the_nearest_other_image():
    # nearest other image at 0.1, 0.1, 0.3, 0.7, 0.9 (the row's own entry, wherever listed, is not counted)
    knn = np.array([[0, 1, 2], [1, 0, 2], [2, 3, 1], [2, 3, 4], [4, 0, 3]])
    d = np.array([[0, .1, .5], [0, .1, .6], [0, .3, .8], [.7, 0, .9], [0, .9, .95]])
    assert grouping.automatic_eps(knn, d) == pytest.approx(0.3)
    # pseudo_identities with AUTO: each camera grouped at its own median, each one reported
    x, labels = bunches([4, 4, 4, 4], spread=0.2)
    cameras = np.repeat([0, 1], 8)
    used = []
    found = grouping.pseudo_identities(x, cameras, across=False, eps=grouping.AUTO, k1=3, k2=1, eps_used=used)
    assert len(used) == 2 and all(0 < e < 1 for e in used)
    for camera, eps in zip((0, 1), used):
        rows = np.flatnonzero(cameras == camera)
        knn, _ = grouping.neighbours(x[rows], 3)
        alone = grouping.dbscan(knn, grouping.jaccard(x[rows], knn, 1), eps, grouping.MIN_SAMPLES)
        assert np.array_equal(found[rows] >= 0, alone >= 0)


def test_a_border_image_is_left_out_of_a_group_holding_its_cannot_partner():
    # images 0-3 are cores of one group; border image 4 is near core 0 only, but known not to be 3
    knn = np.array([[0, 1, 2, 3, 4], [1, 0, 2, 3, 4], [2, 0, 1, 3, 4], [3, 0, 1, 2, 4], [4, 0, 1, 2, 3]])
    d = np.array([[0, .1, .1, .1, .2], [0, .1, .1, .1, .9], [0, .1, .1, .1, .9], [0, .1, .1, .1, .9],
                  [0, .2, .9, .9, .9]])
    assert grouping.dbscan(knn, d, eps=0.5, min_samples=4).tolist() == [0, 0, 0, 0, 0]
    apart = grouping.dbscan(knn, d, eps=0.5, min_samples=4, cannot=(np.array([3]), np.array([4])))
    assert apart.tolist() == [0, 0, 0, 0, -1]
