"""bench/experiments/tracking.py's MOT metrics (py-motmetrics, with numpy 2) on a case worked out by
hand, and its scoring of a sequence's linked detections."""
import pytest

from bench.experiments.tracking import mot_scores, sequence_scores
from reid.search import footage as fo
from reid.search import tracking
from reid.synthetic import footage as synthetic_footage


def box(frame, person, left):
    return fo.Box(frame, person, left, 10.0, 20.0, 40.0, 1.0)


def test_one_id_switch_worked_out_by_hand():
    # two people over 4 frames, far apart; person 1 is tracked as 10 in frames 1-2, then as 11; person 2 as 12
    truth = [box(f, 1, 0.0) for f in range(1, 5)] + [box(f, 2, 100.0) for f in range(1, 5)]
    tracks = [tracking.Tracklet(10, 1, 2, 0.0, 0.1, [box(1, -1, 1.0), box(2, -1, 1.0)]),
              tracking.Tracklet(11, 3, 4, 0.2, 0.3, [box(3, -1, 1.0), box(4, -1, 1.0)]),
              tracking.Tracklet(12, 1, 4, 0.0, 0.3, [box(f, -1, 101.0) for f in range(1, 5)])]
    s = mot_scores(truth, tracks)
    # IDF1: person 2 <-> 12 on 4 boxes, person 1 <-> 10 (or 11) on 2: 2 x 6 / (8 true + 8 found) = 0.75;
    # MOTA: 1 - (0 missed + 0 false + 1 switch) / 8 true boxes
    assert s["idf1"] == pytest.approx(0.75) and s["num_switches"] == 1 and s["mota"] == pytest.approx(0.875)
    assert (s["tracks"], s["num_unique_objects"], s["mixed"]) == (3, 2, 0)
    # one track following person 1, then person 2: it holds two people
    crossing = [tracking.Tracklet(10, 1, 4, 0.0, 0.3, [box(1, -1, 1.0), box(2, -1, 1.0), box(3, -1, 101.0),
                                                        box(4, -1, 101.0)])]
    assert mot_scores(truth, crossing)["mixed"] == 1
    # a box off by more than IoU 0.5 is a miss and a false one, not a match
    s = mot_scores(truth[:1], [tracking.Tracklet(10, 1, 1, 0.0, 0.0, [box(1, -1, 15.0)])])
    assert s["mota"] == pytest.approx(-1.0) and s["idf1"] == 0.0


def test_a_sequence_is_scored_against_its_ground_truth(tmp_path):
    made = synthetic_footage.make_footage(str(tmp_path), seed=0, cameras=2, people=3, frames=12, width=160,
                                          height=120, fps=5, video=False)
    scores = sequence_scores(str(tmp_path / made["cameras"][0]["sequence"]))
    assert "motion and appearance" not in scores  # no run to describe the boxes with
    s = scores["overlap"]
    assert 0 < s["idf1"] <= 1 and s["num_unique_objects"] == len(made["cameras"][0]["people"]) and s["tracks"] >= 1
