"""The Market-1501 protocol on cases small enough to work out by hand, and the
vectorised implementation against a plain per-query reference."""
import math

import numpy as np
import pytest

from metrics import format_line, multi_query_features, rank_queries, summarize


def features_with_scores(scores):
    """Unit 2-d gallery features whose dot product with the query [1, 0] is `scores`."""
    s = np.asarray(scores, dtype=np.float64)
    return np.stack([s, np.sqrt(1 - s ** 2)], axis=1).astype(np.float32)


QUERY = np.array([[1.0, 0.0]], dtype=np.float32)


def rank_one(scores, labels, cams, qlabel=1, qcam=1):
    return rank_queries(QUERY, np.array([qlabel]), np.array([qcam]),
                        features_with_scores(scores), np.array(labels), np.array(cams))


def test_trapezoid_ap_with_junk_and_distractors():
    # by score: other id, same id+cam (junk), good, id -1 (junk), distractor, good
    # junk removed: [neg, good, distractor, good] -> good at positions 2 and 4 (1-based)
    # AP = 1/2 * (0/1 + 1/2)/2 + 1/2 * (1/3 + 2/4)/2 = 0.125 + 0.2083333
    first, ap = rank_one([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [2, 1, 1, -1, 0, 1], [2, 1, 2, 2, 2, 3])
    assert first[0] == 1
    assert ap[0] == pytest.approx(0.125 + (1 / 3 + 1 / 2) / 4, abs=1e-12)
    summary = summarize(first, ap)
    assert summary["Rank@1"] == 0 and summary["Rank@5"] == 1


def test_good_matches_at_the_top_give_ap_one():
    first, ap = rank_one([0.9, 0.8, 0.7, 0.1], [1, 1, 3, 1], [2, 3, 2, 1])
    assert first[0] == 0
    assert ap[0] == pytest.approx(1.0)


def test_junk_ahead_of_the_only_good_match_does_not_count():
    # junk (same camera, and id -1) outranks the good match; it is removed, so rank 1
    first, ap = rank_one([0.9, 0.8, 0.7, 0.6], [1, -1, 1, 5], [1, 4, 2, 2])
    assert first[0] == 0 and ap[0] == pytest.approx(1.0)


def test_distractors_stay_as_negatives():
    first, ap = rank_one([0.9, 0.8, 0.7], [0, 0, 1], [2, 3, 2])
    assert first[0] == 2
    assert ap[0] == pytest.approx((0 / 2 + 1 / 3) / 2)  # one good match at r=3: p_prev = 0/2, p = 1/3


def test_query_without_good_match_is_skipped():
    q = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    g = features_with_scores([0.9, 0.5])
    # query 0 (id 1, cam 1): its only same-id image is in its own camera -> no good match
    # query 1 (id 2, cam 1): its good match comes second, AP = (0/1 + 1/2) / 2
    first, ap = rank_queries(q, np.array([1, 2]), np.array([1, 1]), g, np.array([1, 2]), np.array([1, 2]))
    assert first[0] == -1 and math.isnan(ap[0])
    summary = summarize(first, ap)
    assert summary == {"Rank@1": 0.0, "Rank@5": 1.0, "Rank@10": 1.0, "mAP": 0.25}


def test_ties_keep_gallery_order():
    # equal scores: the earlier gallery image ranks first, every run
    first, _ = rank_one([0.5, 0.5], [7, 1], [2, 2])
    assert first[0] == 1
    first, _ = rank_one([0.5, 0.5], [1, 7], [2, 2])
    assert first[0] == 0


def test_original_result_line():
    line = format_line({"Rank@1": 0.8866, "Rank@5": 0.95, "Rank@10": 0.97, "mAP": 0.7258})
    assert line == "Rank@1:0.886600 Rank@5:0.950000 Rank@10:0.970000 mAP:0.725800"


def reference_protocol(qf, ql, qc, gf, gl, gc):
    """Per query, straight from the definition (slow, obviously right)."""
    firsts, aps = [], []
    for i in range(len(qf)):
        score = gf @ qf[i]
        order = sorted(range(len(gf)), key=lambda j: (-score[j], j))
        kept = [j for j in order if not (gl[j] == -1 or (gl[j] == ql[i] and gc[j] == qc[i]))]
        hits = [r for r, j in enumerate(kept, 1) if gl[j] == ql[i] and gc[j] != qc[i]]
        if not hits:
            firsts.append(-1)
            aps.append(float("nan"))
            continue
        ap = 0.0
        for k, r in enumerate(hits, 1):
            previous = (k - 1) / (r - 1) if r > 1 else 1.0
            ap += (previous + k / r) / 2 / len(hits)
        firsts.append(hits[0] - 1)
        aps.append(ap)
    return np.array(firsts), np.array(aps)


def test_vectorised_equals_reference_on_random_data(monkeypatch):
    rng = np.random.default_rng(0)
    nq, ng, d = 40, 300, 16
    gl = rng.integers(1, 15, ng)
    gl[rng.random(ng) < 0.1] = -1
    gl[rng.random(ng) < 0.1] = 0
    gc = rng.integers(1, 7, ng)
    ql, qc = rng.integers(1, 16, nq), rng.integers(1, 7, nq)   # id 15 has no gallery image
    qf = rng.normal(size=(nq, d)).astype(np.float32)
    gf = rng.normal(size=(ng, d)).astype(np.float32)
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    monkeypatch.setattr("metrics.BLOCK_ELEMENTS", 7 * ng)  # several query blocks
    first, ap = rank_queries(qf, ql, qc, gf, gl, gc)
    ref_first, ref_ap = reference_protocol(qf, ql, qc, gf, gl, gc)
    assert (first == ref_first).all()
    assert (first == -1).any()
    np.testing.assert_allclose(ap, ref_ap, atol=1e-6, equal_nan=True)


def test_multi_query_uses_mean_of_same_id_and_camera():
    qf = np.zeros((2, 2), dtype=np.float32)
    mqf = np.array([[1, 0], [0, 1], [5, 5], [3, 3]], dtype=np.float32)
    out = multi_query_features(qf, np.array([1, 2]), np.array([1, 1]),
                               mqf, np.array([1, 1, 1, 3]), np.array([1, 1, 2, 1]))
    np.testing.assert_allclose(out[0], [0.5, 0.5])   # mean of the two id-1 camera-1 images
    np.testing.assert_allclose(out[1], [0, 0])       # no multi-query image: own feature
