"""tracking.py's linking by appearance, on boxes and descriptors made by hand: people who meet and
turn back keep their own tracklets, a person hidden for a while is one tracklet again, and the
pairs of different people a footage gives without labels."""
import numpy as np

from reid.search.footage import Box
from reid.search.tracking import link_tracklets, same_frame_pairs

FPS = 10.0
RED, BLUE = np.eye(4, dtype=np.float32)[:2]  # two people's descriptors, cosine 0 to each other


def people_who_meet_and_turn_back():
    """Red walks right and blue left, 4 pixels a frame, until their boxes overlap on frame 5, then
    each walks back the way they came; boxes of each frame in the order red, blue."""
    boxes, features = [], []
    for frame in range(1, 10):
        step = min(frame, 10 - frame)  # 1, 2, 3, 4, 5, 4, 3, 2, 1
        for left, look in ((10 + 4 * step, RED), (50 - 4 * step, BLUE)):
            boxes.append(Box(frame, -1, left, 10, 12, 30, 1.0))
            features.append(look)
    return boxes, np.array(features)


def colours(tracklets, features):
    return [sorted({int(np.argmax(features[k])) for k in t.rows}) for t in tracklets]


def test_people_who_meet_and_turn_back_keep_their_own_tracklets():
    boxes, features = people_who_meet_and_turn_back()
    # by motion alone, each is predicted to walk on through the other, and takes the other's box
    moved = link_tracklets(boxes, FPS, motion=True)
    assert any(len(c) > 1 for c in colours(moved, features))
    # allowed to take a box it overlaps less, but looks like, red keeps to red
    seen = link_tracklets(boxes, FPS, motion=True, features=features, same_cosine=0.5)
    assert colours(seen, features) == [[0], [1]] and [len(t.boxes) for t in seen] == [9, 9]
    # refused outright below different_cosine, whatever the overlap
    refused = link_tracklets(boxes, FPS, motion=True, features=features, different_cosine=0.5)
    assert all(len(c) == 1 for c in colours(refused, features))


def test_a_person_hidden_for_a_while_is_one_tracklet_again_and_another_is_not():
    """Red stands still, hidden on frames 4 to 9 (more than max_gap 3 sampled frames); on frame 10
    red is back, and after red leaves, blue stands in red's place from frame 17."""
    frames = [1, 2, 3, 10, 11, 12]
    boxes = [Box(n, -1, 20, 10, 12, 30, 1.0) for n in frames] + [Box(n, -1, 22, 10, 12, 30, 1.0) for n in (17, 18)]
    features = np.array([RED] * len(frames) + [BLUE] * 2)
    assert len(link_tracklets(boxes, FPS, motion=True, features=features)) == 3  # no same_cosine: no joining
    joined = link_tracklets(boxes, FPS, motion=True, features=features, same_cosine=0.5)
    assert [[b.frame for b in t.boxes] for t in joined] == [frames, [17, 18]]
    # beyond max_merge frames apart, fragments stay apart
    apart = link_tracklets(boxes, FPS, motion=True, features=features, same_cosine=0.5, max_merge=5)
    assert len(apart) == 3


def test_a_look_alike_far_from_where_the_person_went_is_not_joined():
    """Red walks right 2 pixels a frame for frames 1-3; on frame 5 a red box appears 200 pixels off."""
    boxes = [Box(n, -1, 10 + 2 * n, 10, 12, 30, 1.0) for n in (1, 2, 3)] + [Box(5, -1, 220, 10, 12, 30, 1.0)]
    features = np.array([RED] * 4)
    assert len(link_tracklets(boxes, FPS, motion=True, features=features, same_cosine=0.5)) == 2


def test_two_boxes_of_one_frame_are_two_people_where_they_do_not_overlap():
    boxes = [Box(1, -1, 0, 0, 10, 20, 1.0), Box(1, -1, 9, 0, 10, 20, 1.0),  # one pixel column shared
             Box(1, -1, 19, 0, 10, 20, 1.0), Box(2, -1, 0, 0, 10, 20, 1.0), Box(3, -1, 0, 0, 10, 20, 1.0)]
    first, second = same_frame_pairs(boxes)
    assert sorted(zip(first.tolist(), second.tolist())) == [(0, 2), (1, 2)]


def test_boxes_with_track_ids_are_linked_by_their_ids_whatever_they_look_like():
    boxes = [Box(n, 7, 20, 10, 12, 30, 1.0) for n in (1, 2)] + [Box(n, 9, 60, 10, 12, 30, 1.0) for n in (1, 2)]
    features = np.array([RED, BLUE, BLUE, RED])
    linked = link_tracklets(boxes, FPS, motion=True, features=features, same_cosine=0.5, different_cosine=0.5)
    assert [(t.id, t.rows) for t in linked] == [(7, [0, 1]), (9, [2, 3])]
