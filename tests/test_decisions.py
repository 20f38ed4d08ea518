"""decisions.py: the threshold set on the footage's own pairs of different people, P(same) moved
to it, the run's calibration where the footage has too few pairs, and --prior as before."""
import numpy as np
import pytest

from reid.evaluation.verification import save_thresholds
from reid.search.decisions import FootagePairs, judge_of_run

# a run's calibration: FAR 1e-2 at cosine 0.5, P(same) = sigmoid(2 ln x + 1 (-ln(1 - x)) - 3), x = (1 + cos) / 2
CALIBRATION = {"checkpoint": "last", "pairs": "held-out pairs", "prior": 0.1,
               "cosine": {"far=0.01": 0.5, "far=0.001": 0.7}, "cosine_beta": {"a": 2.0, "b": 1.0, "c": -3.0}}


@pytest.fixture
def run(tmp_path):
    save_thresholds(str(tmp_path), CALIBRATION)
    return str(tmp_path)


def footage(cosines):
    return FootagePairs(np.asarray(cosines, np.float64), [("cam1", len(cosines))])


def test_the_footage_sets_the_threshold_at_far_and_moves_p_same_to_it(run, capsys):
    # 1000 pairs of different people: 10 of them (1 in 100, allowed at FAR 1e-2) above 0.8, the rest up to 0.3
    pairs = footage(np.r_[np.linspace(-0.5, 0.3, 990), np.linspace(0.8, 0.9, 10)])
    judge = judge_of_run(run, "last", None, 1e-2, footage=pairs)
    own = judge_of_run(run, "last", None, 1e-2)
    assert judge.scores(0.31, None)["same"] == 1 and judge.scores(0.29, None)["same"] == 0
    assert own.scores(0.49, None)["same"] == 0
    # the same P(same) at the footage's threshold as the run's at its own: the curve moved by -0.2
    assert judge.scores(0.3, None)["p_same"] == pytest.approx(own.scores(0.5, None)["p_same"], abs=1e-6)
    assert judge.scores(0.6, None)["p_same"] == pytest.approx(own.scores(0.8, None)["p_same"], abs=1e-6)
    assert "this footage's 1000 pairs of different people (1000 in cam1" in judge.rule()[0]
    assert "moved -0.200 along cosine" in judge.rule()[1]
    # --prior moves P(same), not the decisions
    rare = judge_of_run(run, "last", None, 1e-2, prior=0.001, footage=pairs)
    assert rare.scores(0.6, None)["p_same"] < judge.scores(0.6, None)["p_same"]
    assert [rare.scores(c, None)["same"] for c in (0.29, 0.31)] == [0, 1]
    assert capsys.readouterr().err == ""


def test_too_few_pairs_leave_the_decision_to_the_run_and_say_so(run, capsys):
    judge = judge_of_run(run, "last", None, 1e-2, footage=footage(np.linspace(-0.5, 0.9, 299)))
    assert "fewer than the 300 that a threshold at FAR 0.01 needs" in capsys.readouterr().err
    assert judge.scores(0.51, None)["same"] == 1 and "held-out pairs" in judge.rule()[0]


def test_a_given_threshold_overrides_the_footage(run):
    judge = judge_of_run(run, "last", None, 1e-2, threshold=0.5, footage=footage(np.linspace(-0.5, 0.9, 1000)))
    assert judge.source == "--threshold"


def test_a_run_without_calibration_decides_on_cosine_at_the_footage_threshold(tmp_path):
    pairs = footage(np.r_[np.linspace(-0.5, 0.3, 990), np.linspace(0.8, 0.9, 10)])
    judge = judge_of_run(str(tmp_path), "last", (np.ones(4), 0.0), 1e-2, footage=pairs)
    assert judge.decided_on == "cosine similarity" and judge.scores(0.31, 2.0)["same"] == 1
    assert judge.scores(0.29, 2.0)["same"] == 0 and judge.scores(0.29, 2.0)["p_head_raw"] > 0.8


def test_the_pairs_of_a_footage_are_a_box_against_the_other_persons_tracklet():
    """Two people side by side on frames 1 and 2, a third alone on frame 3, a fourth overlapping the
    first on frame 1: each box of the first two against the other's tracklet, both ways round."""
    from reid.search.footage import Box
    from reid.search.gallery import Described
    from reid.search.tracking import Tracklet

    def box(frame, left):
        return Box(frame, -1, left, 0, 10, 20, 1.0)
    a = Tracklet(1, 1, 2, 0.0, 0.1, [box(1, 0), box(2, 0)])
    b = Tracklet(2, 1, 2, 0.0, 0.1, [box(1, 50), box(2, 50)])
    c = Tracklet(3, 3, 3, 0.2, 0.2, [box(3, 0)])
    d = Tracklet(4, 1, 1, 0.0, 0.0, [box(1, 5)])
    box_features = np.array([[1, 0], [0.6, 0.8], [0, 1], [0, 1], [1, 0], [0.6, 0.8]], np.float32)
    means = np.array([[0.8944, 0.4472], [0, 1], [1, 0], [0.6, 0.8]], np.float32)
    described = Described(None, [a, b, c, d], box_features, means, False, np.zeros(0))
    # a's boxes against b's mean: 0, 0.8; b's boxes against a's mean: 0.4472 twice; d overlaps a, not b:
    # d's box against b's mean 0.8, b's box on frame 1 against d's mean 0.8
    assert sorted(described.negatives().tolist()) == pytest.approx([0.0, 0.4472, 0.4472, 0.8, 0.8, 0.8], abs=1e-4)
