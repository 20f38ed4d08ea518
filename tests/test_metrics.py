"""The Market-1501 protocol on cases small enough to work out by hand, and the
vectorised implementation against a plain per-query reference."""
import math

import numpy as np
import pytest

from reid.evaluation import metrics
from reid.evaluation.metrics import Side, format_lines, multi_query_features, rank_queries, summarize


def features_with_scores(scores):
    """Unit 2-d gallery features whose dot product with the query [1, 0] is `scores`."""
    s = np.asarray(scores, dtype=np.float64)
    return np.stack([s, np.sqrt(1 - s ** 2)], axis=1).astype(np.float32)


QUERY = np.array([[1.0, 0.0]], dtype=np.float32)


def rank_one(scores, labels, cams, qlabel=1, qcam=1):
    ranks = rank_queries(Side(QUERY, np.array([qlabel]), np.array([qcam])),
                         Side(features_with_scores(scores), np.array(labels), np.array(cams)))
    return {k: v[0] for k, v in ranks.items()}


def test_both_aps_and_inp_with_junk_and_distractors():
    # by score: other id, same id+cam (junk), good, id -1 (junk), distractor, good
    # junk removed: [neg, good, distractor, good] -> good matches at positions 2 and 4 (1-based)
    r = rank_one([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [2, 1, 1, -1, 0, 1], [2, 1, 2, 2, 2, 3])
    assert r["first"] == 1
    # trapezoid: 1/2 * (0/1 + 1/2)/2 + 1/2 * (1/3 + 2/4)/2
    assert r["ap"] == pytest.approx(0.125 + (1 / 3 + 1 / 2) / 4, abs=1e-12)
    # non-interpolated: (1/2 + 2/4) / 2; INP: 2 good matches, the last at position 4
    assert r["ap_standard"] == pytest.approx(0.5, abs=1e-12)
    assert r["inp"] == pytest.approx(0.5, abs=1e-12)


def test_good_matches_at_the_top_give_ap_one():
    r = rank_one([0.9, 0.8, 0.7, 0.1], [1, 1, 3, 1], [2, 3, 2, 1])
    assert r["first"] == 0
    assert r["ap"] == r["ap_standard"] == r["inp"] == pytest.approx(1.0)


def test_junk_ahead_of_the_only_good_match_does_not_count():
    # junk (same camera, and id -1) outranks the good match; it is removed, so rank 1
    r = rank_one([0.9, 0.8, 0.7, 0.6], [1, -1, 1, 5], [1, 4, 2, 2])
    assert r["first"] == 0 and r["ap"] == pytest.approx(1.0)


def test_distractors_stay_as_negatives():
    r = rank_one([0.9, 0.8, 0.7], [0, 0, 1], [2, 3, 2])
    assert r["first"] == 2
    assert r["ap"] == pytest.approx((0 / 2 + 1 / 3) / 2)  # one good match at r=3: p_prev = 0/2, p = 1/3
    assert r["ap_standard"] == pytest.approx(1 / 3) and r["inp"] == pytest.approx(1 / 3)


def test_query_without_good_match_is_skipped():
    q = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    g = features_with_scores([0.9, 0.5])
    # query 0 (id 1, cam 1): its only same-id image is in its own camera -> no good match
    # query 1 (id 2, cam 1): its good match comes second, AP = (0/1 + 1/2) / 2
    ranks = rank_queries(Side(q, np.array([1, 2]), np.array([1, 1])), Side(g, np.array([1, 2]), np.array([1, 2])))
    assert ranks["first"][0] == -1 and math.isnan(ranks["ap"][0])
    summary = summarize(ranks)
    assert summary == {"Rank@1": 0.0, "Rank@5": 1.0, "Rank@10": 1.0, "mAP": 0.25, "mAP_standard": 0.5, "mINP": 0.5}


def test_junk_only_gallery_skips_the_query():
    # id -1 everywhere, and the query's own id only in its own camera
    r = rank_one([0.9, 0.8, 0.7], [-1, 1, -1], [2, 1, 3])
    assert r["first"] == -1 and math.isnan(r["ap"]) and math.isnan(r["inp"])
    ranks = rank_queries(Side(QUERY, np.array([1]), np.array([1])),
                         Side(features_with_scores([0.5, 0.4]), np.array([-1, -1]), np.array([2, 3])))
    assert ranks["first"][0] == -1


def test_no_query_with_a_good_match_is_an_error():
    ranks = rank_queries(Side(QUERY, np.array([1]), np.array([1])),
                         Side(features_with_scores([0.5]), np.array([1]), np.array([1])))
    with pytest.raises(ValueError, match="no query has a good match"):
        summarize(ranks)


def test_ties_keep_gallery_order():
    # equal scores: the earlier gallery image ranks first, every run
    assert rank_one([0.5, 0.5], [7, 1], [2, 2])["first"] == 1
    assert rank_one([0.5, 0.5], [1, 7], [2, 2])["first"] == 0
    # a good match tied with a later distractor and an earlier negative, behind a junk image
    r = rank_one([0.5, 0.5, 0.9, 0.5, 0.2], [3, 1, 1, 0, 1], [2, 2, 1, 2, 4])
    assert r["first"] == 1                               # [neg, good, distractor, good]
    assert r["inp"] == pytest.approx(2 / 4)


def test_original_result_lines():
    lines = format_lines({"Rank@1": 0.8866, "Rank@5": 0.95, "Rank@10": 0.97, "mAP": 0.7258,
                          "mAP_standard": 0.74, "mINP": 0.41}, prefix="multi ")
    assert lines == ["multi Rank@1:0.886600 Rank@5:0.950000 Rank@10:0.970000 mAP:0.725800",
                     "multi non-interpolated AP (torchreid, fast-reid): mAP:0.740000 mINP:0.410000"]


def reference_protocol(qf, ql, qc, gf, gl, gc):
    """Per query, straight from the definitions (slow, obviously right)."""
    out = {"first": [], "ap": [], "ap_standard": [], "inp": []}
    for i in range(len(qf)):
        score = gf @ qf[i]
        order = sorted(range(len(gf)), key=lambda j: (-score[j], j))
        kept = [j for j in order if not (gl[j] == -1 or (gl[j] == ql[i] and gc[j] == qc[i]))]
        hits = [r for r, j in enumerate(kept, 1) if gl[j] == ql[i] and gc[j] != qc[i]]
        if not hits:
            for k, v in (("first", -1), ("ap", np.nan), ("ap_standard", np.nan), ("inp", np.nan)):
                out[k].append(v)
            continue
        ap = sum(((k - 1) / (r - 1) if r > 1 else 1.0) / 2 + k / r / 2 for k, r in enumerate(hits, 1)) / len(hits)
        out["first"].append(hits[0] - 1)
        out["ap"].append(ap)
        out["ap_standard"].append(sum(k / r for k, r in enumerate(hits, 1)) / len(hits))
        out["inp"].append(len(hits) / hits[-1])
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("quantise", [False, True])
def test_vectorised_equals_reference_on_random_data(monkeypatch, quantise):
    rng = np.random.default_rng(0)
    nq, ng, d = 40, 300, 16
    gl = rng.integers(1, 15, ng)
    gl[rng.random(ng) < 0.1] = -1
    gl[rng.random(ng) < 0.1] = 0
    gc = rng.integers(1, 7, ng)
    ql, qc = rng.integers(1, 16, nq), rng.integers(1, 7, nq)   # id 15 has no gallery image
    qf = rng.normal(size=(nq, d)).astype(np.float32)
    gf = rng.normal(size=(ng, d)).astype(np.float32)
    if quantise:  # few distinct scores: ties everywhere, so the stable-sort path decides
        qf, gf = np.sign(qf), np.sign(gf)
    else:
        qf /= np.linalg.norm(qf, axis=1, keepdims=True)
        gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 7 * ng)  # several query blocks
    ranks = rank_queries(Side(qf, ql, qc), Side(gf, gl, gc))
    reference = reference_protocol(qf, ql, qc, gf, gl, gc)
    assert (ranks["first"] == reference["first"]).all() and (ranks["first"] == -1).any()
    for k in ("ap", "ap_standard", "inp"):
        np.testing.assert_allclose(ranks[k], reference[k], atol=1e-6, equal_nan=True)


def test_multi_query_uses_mean_of_same_id_and_camera():
    qf = np.zeros((2, 2), dtype=np.float32)
    mqf = np.array([[1, 0], [0, 1], [5, 5], [3, 3]], dtype=np.float32)
    out = multi_query_features(Side(qf, np.array([1, 2]), np.array([1, 1])),
                               Side(mqf, np.array([1, 1, 1, 3]), np.array([1, 1, 2, 1]))).features
    np.testing.assert_allclose(out[0], [0.5, 0.5])   # mean of the two id-1 camera-1 images
    np.testing.assert_allclose(out[1], [0, 0])       # no multi-query image: own feature
