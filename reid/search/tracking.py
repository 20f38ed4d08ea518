"""Tracklets: a footage's boxes linked across frames into one person's boxes while they stay in
view, and the pairs of boxes that are surely two different people (two boxes of one frame).

Boxes with a track id (ground truth, a tracker's output) are linked by their id. Boxes without one
are linked frame by frame, each sampled frame's boxes assigned to the tracklets still open:
    overlap      the highest IoU with each tracklet's last box first, down to iou_threshold
    motion       IoU with where each tracklet's person is predicted to be (constant velocity), by
                 the assignment of the highest total (the Hungarian algorithm), as SORT links
                 (Bewley et al., ICIP 2016)
    appearance   motion, and the descriptors: a box near a tracklet's predicted place (within one
                 body height) may join it without overlap where their cosine similarity is above
                 same_cosine, may not join one it looks less like than different_cosine (the
                 person followed is hidden, and the box overlapping their place is someone
                 else's), and the assignment maximises IoU + cosine, so that two people who
                 cross keep their own tracklets; then fragments of one person (a tracklet ended,
                 another begun within max_merge frames, near where the first was heading) are
                 joined where their mean descriptors are above same_cosine. The gating and fusion
                 of motion and appearance follow DeepSORT (Wojke et al., ICIP 2017) and BoT-SORT
                 (Aharonian et al., 2022); the joining of fragments is the offline step a search,
                 which sees the whole footage, can afford.
same_cosine and different_cosine come from the footage itself (same_frame_pairs): the cosine
similarities that 1 in 100, and a quarter, of the pairs of different people of these cameras reach.
"""
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from reid.search.footage import frame_time

# how far (in body heights) a person may be from where they were predicted, to join by appearance
REACH = 1.0
# the share of a tracklet's appearance kept at each new box (an exponential moving average, as
# JDE and BoT-SORT keep it): a person's look changes slowly as they turn and walk
APPEARANCE_MOMENTUM = 0.9
# linking by appearance stands on the cosine that this share of the footage's pairs of different
# people reach, and on at least MIN_ABOVE of them reaching it (else no box joins a tracklet it does
# not overlap, and no fragments are joined)
LINK_FAR = 1e-2
MIN_ABOVE = 3
# a box may not join a tracklet it looks less like than this share of the footage's pairs of
# different people look alike (however they overlap: the person the tracklet followed is hidden,
# and the box is someone else's)
UNLIKE_SHARE = 0.25


@dataclass
class Tracklet:
    """One person's boxes across frames, in frame order: linked by the file's track id, or by
    overlap (and appearance) where the file has none. rows: the boxes' positions in the list given
    to link_tracklets."""
    id: int
    first_frame: int
    last_frame: int
    first_time: float
    last_time: float
    boxes: list
    rows: list = field(default_factory=list)


def iou_matrix(a, b):
    """Intersection over union of every box of `a` with every box of `b` (len(a) x len(b))."""
    a = np.array([(box.left, box.top, box.width, box.height) for box in a], dtype=np.float64).reshape(-1, 1, 4)
    b = np.array([(box.left, box.top, box.width, box.height) for box in b], dtype=np.float64).reshape(1, -1, 4)
    overlap_w = (np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0])).clip(0)
    overlap_h = (np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1])).clip(0)
    inter = overlap_w * overlap_h
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return inter / np.maximum(union, np.finfo(np.float64).tiny)  # two empty boxes: 0, not 0 / 0


def predicted(tracklet, frame, history=5):
    """Where the tracklet's person (a list of boxes) is expected at `frame`: its last box moved on at
    the mean velocity of its centre and size over its last `history` boxes (constant velocity, as
    SORT's Kalman filter assumes)."""
    last, earlier = tracklet[-1], tracklet[max(0, len(tracklet) - history)]
    if earlier.frame == last.frame:
        return last
    geometry = np.array([[b.left + b.width / 2, b.top + b.height / 2, b.width, b.height] for b in (earlier, last)])
    cx, cy, w, h = geometry[1] + (geometry[1] - geometry[0]) / (last.frame - earlier.frame) * (frame - last.frame)
    return last._replace(frame=frame, left=cx - w / 2, top=cy - h / 2, width=max(w, 1.0), height=max(h, 1.0))


def near(guesses, boxes):
    """Whether each box is within REACH body heights of each guess (len(guesses) x len(boxes)),
    centre to centre, and of a height between 2/3 and 3/2 of it: where a person can have gone."""
    def centres(some):
        return np.array([(b.left + b.width / 2, b.top + b.height / 2, b.height) for b in some], np.float64)
    g, c = centres(guesses).reshape(-1, 1, 3), centres(boxes).reshape(1, -1, 3)
    distance = np.hypot(g[..., 0] - c[..., 0], g[..., 1] - c[..., 1])
    ratio = c[..., 2] / g[..., 2]
    return (distance <= REACH * g[..., 2]) & (ratio >= 2 / 3) & (ratio <= 3 / 2)


def unit(v):
    return v / max(float(np.linalg.norm(v)), 1e-12)


def link_frames(boxes, stride, iou_threshold, max_gap, motion=False, features=None, same_cosine=None,
                different_cosine=None):
    """Lists of row numbers of `boxes`, one a tracklet, linked frame by frame (the module's overlap,
    motion or, with features, appearance); a box left over starts a tracklet, and a tracklet
    unmatched for more than max_gap sampled frames is closed. With features, a box may join a
    tracklet it does not overlap where their cosine similarity is at least same_cosine (None:
    never), and may not join one where it is below different_cosine (None: always may)."""
    by_frame = defaultdict(list)
    for k, box in enumerate(boxes):
        by_frame[box.frame].append(k)
    looks = features is not None
    open_, closed, appearance = [], [], []
    for frame in sorted(by_frame):
        step = (frame - 1) // stride
        kept = [k for k, t in enumerate(open_) if step - (boxes[t[-1]].frame - 1) // stride - 1 <= max_gap]
        closed += [t for k, t in enumerate(open_) if k not in kept]
        open_, appearance = [open_[k] for k in kept], [appearance[k] for k in kept]
        current = by_frame[frame]
        here = [boxes[k] for k in current]
        guesses = [predicted([boxes[k] for k in t], frame) if motion or looks else boxes[t[-1]] for t in open_]
        score = iou_matrix(guesses, here)
        allowed = score >= iou_threshold
        if looks:
            cosine = np.array(appearance).reshape(len(open_), features.shape[1]) @ features[current].T
            if same_cosine is not None:
                allowed |= (cosine >= same_cosine) & near(guesses, here)
            if different_cosine is not None:
                allowed &= cosine >= different_cosine
            score = score + cosine
        if motion or looks:
            rows, cols = linear_sum_assignment(np.where(allowed, score, -1e9), maximize=True)
            pairs = [(i, j) for i, j in zip(rows, cols) if allowed[i, j]]
        else:
            pairs, taken_i, taken_j = [], set(), set()
            for flat in np.argsort(-score, axis=None, kind="stable"):
                i, j = divmod(int(flat), len(current))
                if not allowed[i, j]:
                    break
                if i not in taken_i and j not in taken_j:
                    pairs.append((i, j))
                    taken_i.add(i)
                    taken_j.add(j)
        taken = set()
        for i, j in pairs:
            open_[i].append(current[j])
            if looks:
                appearance[i] = unit(APPEARANCE_MOMENTUM * appearance[i] + (1 - APPEARANCE_MOMENTUM)
                                     * features[current[j]])
            taken.add(j)
        for j, k in enumerate(current):
            if j not in taken:
                open_.append([k])
                appearance.append(features[k] if looks else None)
    return closed + open_


def join_fragments(groups, boxes, features, same_cosine, max_merge):
    """The groups (row lists, each in frame order) with the fragments of one person joined: a group
    that begins at most max_merge frames after another ends, near where that one was heading
    (REACH), and whose mean descriptor is above same_cosine with its mean; the most alike first,
    each group joined to at most one before and one after it."""
    means = np.array([unit(features[g].mean(0)) for g in groups]).reshape(len(groups), features.shape[1])
    cosine = means @ means.T
    candidates = []
    for a, first in enumerate(groups):
        end = boxes[first[-1]].frame
        for b, second in enumerate(groups):
            start = boxes[second[0]]
            if (0 < start.frame - end <= max_merge and cosine[a, b] >= same_cosine
                    and near([predicted([boxes[k] for k in first], start.frame)], [start])[0, 0]):
                candidates.append((-cosine[a, b], a, b))
    after, before = {}, {}
    for _, a, b in sorted(candidates):
        if a not in after and b not in before:
            after[a], before[b] = b, a
    joined = []
    for a in range(len(groups)):
        if a in before:
            continue
        chain = list(groups[a])
        while a in after:
            a = after[a]
            chain += groups[a]
        joined.append(chain)
    return joined


def link_tracklets(boxes, fps, stride=1, iou_threshold=0.3, max_gap=3, motion=False, features=None,
                   same_cosine=None, different_cosine=None, max_merge=None):
    """Tracklets of the boxes of every stride-th frame (1, 1 + stride, ...), ordered by first frame:
    boxes with a track id (id >= 0) by their id, however long they are out of view; boxes without
    (id -1) by link_frames (overlap, motion, or appearance where `features`, one row per box, are
    given; then, with same_cosine, join_fragments, up to max_merge frames apart, by default 2
    seconds), numbered after the file's ids."""
    looks = features is not None
    sampled = [k for k, box in enumerate(boxes) if (box.frame - 1) % stride == 0]
    by_id = defaultdict(list)
    for k in sampled:
        if boxes[k].id >= 0:
            by_id[boxes[k].id].append(k)
    free = [k for k in sampled if boxes[k].id < 0]
    free_boxes = [boxes[k] for k in free]
    free_features = np.asarray(features)[free] if looks else None
    linked = link_frames(free_boxes, stride, iou_threshold, max_gap, motion, free_features, same_cosine,
                         different_cosine)
    if looks and same_cosine is not None:
        linked = join_fragments(linked, free_boxes, free_features, same_cosine,
                                round(2 * fps) if max_merge is None else max_merge)
    linked = [[free[k] for k in group] for group in linked]
    first_new = max(by_id, default=0) + 1
    groups = list(by_id.items()) + [(first_new + k, group) for k, group in enumerate(linked)]
    tracklets = []
    for track, group in groups:
        group = sorted(group, key=lambda k: boxes[k].frame)
        first, last = boxes[group[0]].frame, boxes[group[-1]].frame
        tracklets.append(Tracklet(track, first, last, frame_time(first, fps), frame_time(last, fps),
                                  [boxes[k] for k in group], group))
    return sorted(tracklets, key=lambda t: (t.first_frame, t.id))


def same_frame_pairs(boxes):
    """(i, j) row arrays of every pair of boxes on one frame that do not overlap: two different
    people, each seen whole, with no label needed (boxes that overlap may be one person detected
    twice, or one person hiding another, whose box then shows both)."""
    by_frame = defaultdict(list)
    for k, box in enumerate(boxes):
        by_frame[box.frame].append(k)
    first, second = [], []
    for rows in by_frame.values():
        if len(rows) < 2:
            continue
        overlap = iou_matrix([boxes[k] for k in rows], [boxes[k] for k in rows])
        i, j = np.triu_indices(len(rows), k=1)
        keep = overlap[i, j] == 0
        first += [rows[k] for k in i[keep]]
        second += [rows[k] for k in j[keep]]
    return np.array(first, np.int64), np.array(second, np.int64)


def mot_lines(tracklets):
    """The tracklets as the lines of a MOTChallenge results file, frame by frame
    (frame,id,left,top,width,height,conf,-1,-1,-1): what MOT tools (motmetrics, TrackEval) score
    against a ground truth and draw."""
    rows = sorted(((box.frame, t.id, box) for t in tracklets for box in t.boxes), key=lambda row: row[:2])
    return [f"{frame},{track},{box.left:.2f},{box.top:.2f},{box.width:.2f},{box.height:.2f},{box.conf:g},-1,-1,-1\n"
            for frame, track, box in rows]
