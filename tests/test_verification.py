"""Verification metrics and thresholds, against a small case worked out by hand."""
import numpy as np
import pytest

from reid.evaluation.metrics import Side
from reid.evaluation.verification import (
    beta_logit,
    brier_score,
    expected_calibration_error,
    fit_beta,
    fit_platt,
    load_thresholds,
    median_pair_cosine,
    probability,
    rates_at,
    roc,
    save_thresholds,
    summarize_roc,
    threshold_at_far,
    with_prior,
)


def roc_of(scores, ql, qc, gl, gc):
    """roc() of a given query x gallery score matrix: one-hot queries, the gallery carrying the scores."""
    scores = np.asarray(scores, dtype=np.float32)
    return roc(Side(np.eye(len(scores), dtype=np.float32), ql, qc), Side(scores.T.copy(), gl, gc))


# One query (id 1, camera 1) against ten gallery images. Positives (id 1, other camera) score
# 0.9, 0.6, 0.4; negatives (other ids, the distractor 0 among them) 0.7, 0.5, 0.3, 0.2, 0.1;
# junk (id 1 in camera 1, and id -1) scores highest and must be left out.
SCORES = [[0.9, 0.6, 0.4, 0.7, 0.5, 0.3, 0.2, 0.1, 0.95, 0.99]]
QL, QC = np.array([1]), np.array([1])
GL = np.array([1, 1, 1, 2, 3, 0, 5, 6, 1, -1])
GC = np.array([2, 3, 2, 1, 2, 1, 3, 2, 1, 2])


def curve():
    return roc_of(SCORES, QL, QC, GL, GC)


def test_roc_of_the_hand_case():
    c = curve()
    assert (c["positives"], c["negatives"]) == (3, 5)
    # pairs a positive wins: 0.9 beats 5 negatives, 0.6 beats 4, 0.4 beats 3: 12 of 15
    assert c["auc"] == pytest.approx(12 / 15)
    # thresholds 0.9, 0.6, 0.4: TAR 1/3, 2/3, 1; FAR 0, 1/5 (0.7), 2/5 (0.7 and 0.5)
    np.testing.assert_allclose(c["thresholds"], [0.9, 0.6, 0.4], rtol=1e-6)
    np.testing.assert_allclose(c["tar"], [1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(c["far"], [0, 1 / 5, 2 / 5])


def test_eer_and_tar_at_far_of_the_hand_case():
    s = summarize_roc(curve(), fars=(1e-2, 0.2, 0.5))
    # the staircase runs from (FAR 0.2, TAR 2/3) right to (0.4, 2/3): it meets FAR = 1 - TAR at FAR 1/3
    assert s["eer"] == pytest.approx(1 / 3)
    assert s["tar@far=0.01"] == pytest.approx(1 / 3)  # only threshold 0.9 lets no negative through
    assert s["tar@far=0.2"] == pytest.approx(2 / 3)
    assert s["tar@far=0.5"] == pytest.approx(1.0)
    assert s["auc"] == pytest.approx(0.8)


def test_eer_at_a_corner_and_on_a_vertical_step():
    # positives 0.8, 0.3; negatives 0.5, 0.1: (0,0) -> (0, 1/2) -> right to (1/2, 1/2) -> up to (1/2, 1)
    # the line FAR = 1 - TAR is met at (1/2, 1/2), the corner: EER 1/2
    c = roc_of([[0.8, 0.3, 0.5, 0.1]], [1], [1], [1, 1, 2, 3], [2, 2, 2, 2])
    assert summarize_roc(c)["eer"] == pytest.approx(0.5)
    c = roc_of([[0.8, 0.6, 0.7, 0.1], [0.9, 0.2, 0.1, 0.05]], [1, 1], [1, 1], [1, 1, 2, 3], [2, 2, 2, 2])
    # 4 positives 0.9, 0.8, 0.6, 0.2; 4 negatives 0.7, 0.1, 0.1, 0.05
    np.testing.assert_allclose(c["tar"], [1 / 4, 2 / 4, 3 / 4, 1])
    np.testing.assert_allclose(c["far"], [0, 0, 1 / 4, 1 / 4])
    # (0, 1/2) then right to (1/4, 1/2), up to (1/4, 3/4): FAR + TAR reaches 1 on the vertical part at FAR 1/4
    assert summarize_roc(c)["eer"] == pytest.approx(1 / 4)


def test_ties_count_one_half_in_auc():
    # positive 0.5; negatives 0.5 (a tie) and 0.2
    c = roc_of([[0.5, 0.5, 0.2]], [1], [1], [1, 2, 3], [2, 2, 2])
    assert c["auc"] == pytest.approx(0.75)
    assert c["far"][0] == pytest.approx(0.5)  # "same" when score >= t: the tied negative is accepted


def test_threshold_at_far():
    negatives = [0.7, 0.5, 0.3, 0.2, 0.1]
    t = threshold_at_far(negatives, 0.2)   # one negative in five may pass: just above 0.5
    assert 0.5 < t < 0.5 + 1e-12
    assert threshold_at_far(negatives, 0.1) > 0.7  # none may pass
    assert np.mean(np.array(negatives) >= threshold_at_far(negatives, 0.4)) == pytest.approx(0.4)


def test_the_head_logit_is_one_weighted_product():
    """roc() with the head's (w, b) ranks pairs by (q * w) . g + b, computed here pair by pair."""
    rng = np.random.default_rng(0)
    qf, gf = rng.standard_normal((3, 8)).astype(np.float32), rng.standard_normal((6, 8)).astype(np.float32)
    w, b = rng.standard_normal(8).astype(np.float32), 0.25
    ql, qc, gl, gc = [1, 2, 3], [1, 1, 1], [1, 2, 3, 4, 1, 2], [2, 2, 2, 2, 1, 3]
    by_pair = [[float(np.sum(q * w * g) + b) for g in gf] for q in qf]
    want, got = roc_of(by_pair, ql, qc, gl, gc), roc(Side(qf, ql, qc), Side(gf, gl, gc), w, b)
    assert got["auc"] == pytest.approx(want["auc"])
    np.testing.assert_allclose(got["thresholds"], want["thresholds"], rtol=1e-5)
    assert probability(30.0) < 1 and probability(0.0) == 0.5


def test_roc_equals_counting_every_pair(monkeypatch):
    """Many queries in several blocks, scores with ties: the same curve as counting pair by pair."""
    from reid.evaluation import verification
    monkeypatch.setattr(verification, "BLOCK_ELEMENTS", 500)  # 500 scores a block: many blocks
    rng = np.random.default_rng(1)
    # multiples of 1/4: every score is exact in float32 whatever the order of the sums, and many tie
    qf = (np.round(rng.standard_normal((40, 4)) * 4) / 4).astype(np.float32)
    gf = (np.round(rng.standard_normal((120, 4)) * 4) / 4).astype(np.float32)
    ql, qc = rng.integers(1, 6, 40), rng.integers(1, 4, 40)
    gl, gc = rng.integers(-1, 6, 120), rng.integers(1, 4, 120)
    c = roc(Side(qf, ql, qc), Side(gf, gl, gc))
    scores = qf.astype(np.float64) @ gf.T.astype(np.float64)
    good = (ql[:, None] == gl[None, :]) & (qc[:, None] != gc[None, :]) & (gl[None, :] != -1)
    junk = ((ql[:, None] == gl[None, :]) & (qc[:, None] == gc[None, :])) | (gl[None, :] == -1)
    pos, neg = scores[good], scores[~good & ~junk]
    assert (c["positives"], c["negatives"]) == (len(pos), len(neg))
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert c["auc"] == pytest.approx(wins / (len(pos) * len(neg)))
    for t, far, tar in zip(c["thresholds"], c["far"], c["tar"]):
        assert far == pytest.approx(np.mean(neg >= t)) and tar == pytest.approx(np.mean(pos >= t))


def test_rates_reached_at_given_thresholds_of_the_hand_case(monkeypatch):
    """What evaluate.py reports for a run's thresholds: FAR and TAR over the protocol's pairs."""
    from reid.evaluation import verification
    monkeypatch.setattr(verification, "BLOCK_ELEMENTS", 3)  # one query a block: blocks add up
    scores = np.asarray(SCORES * 2, np.float32)
    qf, gf = np.eye(2, dtype=np.float32), scores.T.copy()
    # negatives 0.7, 0.5, 0.3, 0.2, 0.1 and positives 0.9, 0.6, 0.4 in each of two queries; junk left out
    query = Side(qf, np.array([1, 1]), np.array([1, 1]))
    far, tar = rates_at(query, Side(gf, GL, GC), [0.6, 0.45, 0.96])
    assert far == pytest.approx([1 / 5, 2 / 5, 0]) and tar == pytest.approx([2 / 3, 2 / 3, 0])
    # a threshold on P(same) of a logit: decided = probability
    far, tar = rates_at(query, Side(gf * 10 - 5, GL, GC), [0.5], decided=probability)
    assert far == pytest.approx([2 / 5]) and tar == pytest.approx([2 / 3])  # logits 2, 0 and 4, 1 reach 0


def test_thresholds_file_round_trips(tmp_path):
    thresholds = {"checkpoint": "last", "pairs": "5 val images x 20 training images", "optimistic": False,
                  "cosine": {"far=0.01": 0.6180339887498949, "far=0.001": 0.7071067811865476},
                  "head": {"far=0.01": 0.9990234375, "far=0.001": 0.99999}}
    save_thresholds(str(tmp_path), thresholds)
    assert load_thresholds(str(tmp_path)) == thresholds
    assert load_thresholds(str(tmp_path / "elsewhere")) is None


def test_platt_scaling_recovers_a_logistic_relation():
    rng = np.random.default_rng(0)
    scores = rng.uniform(-1, 1, 200_000)
    same = rng.random(scores.size) < 1 / (1 + np.exp(-(4 * scores - 1)))
    a, b = fit_platt(scores, same)
    assert a == pytest.approx(4, abs=0.05) and b == pytest.approx(-1, abs=0.03)


def test_platt_scaling_stays_finite_on_separated_pairs():
    # every positive above every negative: plain maximum likelihood would run a to infinity
    a, b = fit_platt([0.9, 0.8, 0.1, 0.0, -0.2], [True, True, False, False, False])
    p = probability(a * np.array([0.9, -0.2]) + b)
    assert np.isfinite([a, b]).all() and a > 0
    assert 0.5 < p[0] < 1 and 0 < p[1] < 0.5


def test_platt_scaling_needs_both_kinds_of_pairs():
    with pytest.raises(ValueError, match="1 and 0"):
        fit_platt([0.3], [True])


def test_a_prior_changes_the_odds_only():
    assert with_prior(0.0, 0.1, 0.5) == pytest.approx(np.log(9))
    assert with_prior(1.5, 0.2, 0.2) == pytest.approx(1.5)


def test_calibration_error_and_brier_by_hand():
    p, same = [0.1, 0.1, 0.9, 0.95], [0, 1, 1, 1]
    # 15 bins: both 0.1 in bin 1 (mean 0.1 against 0.5 positive), 0.9 in bin 13, 0.95 in bin 14
    assert expected_calibration_error(p, same) == pytest.approx((2 * 0.4 + 0.1 + 0.05) / 4)
    assert brier_score(p, same) == pytest.approx((0.01 + 0.81 + 0.01 + 0.0025) / 4)
    assert expected_calibration_error([0.0, 1.0], [0, 1]) == 0


def test_calibrated_probabilities_beat_a_squeezed_head_on_new_pairs():
    """The head's raw outputs sit near 0.5 when its weights are small (a rare positive then reads
    as a coin toss); a fit on other pairs makes them mean what they say."""
    rng = np.random.default_rng(1)

    def pairs(n):
        same = rng.random(n) < 0.02
        return rng.normal(np.where(same, 0.6, 0.0), 0.2) * 0.3, same  # logits squeezed into about [-0.2, 0.4]

    fit_logits, fit_same = pairs(100_000)
    logits, same = pairs(100_000)
    a, b = fit_platt(fit_logits, fit_same)
    raw, calibrated = probability(logits), probability(a * logits + b)
    assert expected_calibration_error(raw, same) > 0.4
    assert expected_calibration_error(calibrated, same) < 0.01
    assert brier_score(calibrated, same) < brier_score(raw, same)


def test_beta_calibration_recovers_its_relation_and_gives_a_copy_certainty():
    rng = np.random.default_rng(2)
    cosine = rng.uniform(-0.5, 0.95, 300_000)
    x = (1 + cosine) / 2
    same = rng.random(cosine.size) < probability(2 * np.log(x) - 1.5 * np.log(1 - x) - 3)
    beta = fit_beta(cosine, same)
    assert (beta["a"], beta["b"], beta["c"]) == pytest.approx((2, 1.5, -3), abs=0.15)
    assert probability(beta_logit(1.0, **beta)) == 1  # an exact copy: the same person
    p = probability(beta_logit(np.linspace(-1, 1, 101), **beta))
    assert np.all(np.diff(p) >= 0)


def test_beta_calibration_never_falls_as_cosine_rises():
    rng = np.random.default_rng(3)
    cosine = rng.uniform(-0.5, 0.95, 20_000)
    same = rng.random(cosine.size) < np.where(cosine > 0.9, 0.01, 0.05)  # higher cosine, fewer positives
    beta = fit_beta(cosine, same)
    assert beta["a"] >= 0 and beta["b"] >= 0
    p = probability(beta_logit(np.linspace(-1, 1, 101), **beta))
    assert np.all(np.diff(p) >= -1e-12)


def test_median_pair_cosine_of_every_pair_and_of_random_pairs():
    # three unit vectors: pairs at cosine 1/2 (a, b), 0 (a, c), 0.866 (b, c): the median is 1/2
    f = np.array([[1, 0], [0.5, np.sqrt(0.75)], [0, 1]], np.float32)
    assert median_pair_cosine(f) == pytest.approx(0.5)
    assert median_pair_cosine(f[:1]) is None
    # drawn pairs never pair an image with itself: orthogonal descriptors stay at 0, never 1
    assert median_pair_cosine(np.eye(50, dtype=np.float32), pairs=100) == 0
    assert median_pair_cosine(np.ones((500, 4), np.float32) / 2, pairs=100) == pytest.approx(1)
    # a and b one tracklet: only (a, c) at 0 and (b, c) at 0.866 count, not the same person's (a, b)
    assert median_pair_cosine(f, groups=[7, 7, 9]) == pytest.approx(0.866 / 2, abs=1e-3)
    assert median_pair_cosine(f, groups=[7, 7, 7]) is None
