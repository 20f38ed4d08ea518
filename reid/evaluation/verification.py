"""The verification head as a scorer of image pairs, and how well a score answers "same person?".

The head (model.verif_net) is Linear(512, 2) on f1 * f2. Its same-minus-different logit is

    s(f1, f2) = (W[same] - W[different]) . (f1 * f2) + (b[same] - b[different]) = f1 . (w * f2) + b

a weighted inner product: every query-gallery pair is scored by one matrix product,
(qf * w) @ gf.T + b, as cosine similarity is by qf @ gf.T. P(same) = sigmoid(s).

Pairs follow the ranking protocol (metrics.py): a query and a gallery image of the same id
from another camera are a positive pair; of another id (distractors, id 0, included) a
negative pair; same id and camera, and id -1, are junk and left out. Over all pairs, with the
decision "same person" when score >= t:
    TAR(t) = positives scoring >= t / positives    FAR(t) = negatives scoring >= t / negatives
    ROC AUC   P(positive scores above negative), ties counted one half
    EER       the rate where FAR = 1 - TAR, where the ROC staircase crosses that line
    TAR@FAR=f the best TAR among thresholds whose FAR is at most f
Negatives are never held all at once (Market-1501 has 66 million pairs): each block of scores
is counted against the sorted positive scores, which are few.

Thresholds for deployment are picked on held-out pairs (train_new.py writes them to
model/<name>/thresholds.yaml): the lowest threshold whose FAR on them is at most f.
"""
import os

import numpy as np
import torch
import yaml

from reid.evaluation.metrics import BLOCK_ELEMENTS, good_and_junk
from reid.runs import THRESHOLDS, atomic_path

FARS = (1e-2, 1e-3)


def head_block(qf, gf, w, b, device="cpu"):
    """score_block for metrics.rank_queries: the head's logits of queries start:end x the gallery,
    (qf * w) @ gf.T + b."""
    weighted = torch.as_tensor(np.asarray(qf, np.float32) * np.asarray(w, np.float32).reshape(1, -1))
    gallery = torch.as_tensor(np.asarray(gf), dtype=torch.float32).to(device)
    return lambda start, end: weighted[start:end].to(device) @ gallery.T + b


def weighted_features(query, gallery, w, device):
    """(qf * w, gf) of Sides as float32 tensors, the gallery's on `device`: the two factors of
    every pair's score (qf * w) @ gf.T (w None: cosine similarity)."""
    qf = torch.as_tensor(np.asarray(query.features), dtype=torch.float32)
    if w is not None:
        qf = qf * torch.as_tensor(np.asarray(w), dtype=torch.float32).reshape(1, -1)
    return qf, torch.as_tensor(np.asarray(gallery.features), dtype=torch.float32).to(device)


def probability(logit):
    """P(same) of the head's logit, in float64 (float32 would round 1 - 1e-8 to 1)."""
    with np.errstate(over="ignore"):  # exp(inf) is inf, and P(same) 0, as it should be
        return 1 / (1 + np.exp(-np.asarray(logit, dtype=np.float64)))


def roc(query, gallery, w=None, b=0.0, device="cpu"):
    """The ROC over all pairs of the protocol of Sides `query` and `gallery`, exactly, of the score
    (qf * w) @ gf.T + b: cosine similarity with w None (unit features), the head's logit with its
    (w, b). A dict: positives and negatives (counts), auc, and at each positive score taken as
    threshold (descending, so that far and tar ascend) far and tar.

    Positive pairs are few and scored one by one. Negatives are only counted, block by block:
    each score's bucket (how many positives it is >= to) comes from a fine uniform grid over the
    positives' range, and only scores that share a grid cell with a positive (about 1% of them)
    are placed by binary search; the block is counted whole, then its good and junk pairs taken
    out. No list of negatives is ever held."""
    qf, gf = weighted_features(query, gallery, w, device)
    (ql, qc), (gl, gc) = query.labels(device), gallery.labels(device)
    step = max(1, BLOCK_ELEMENTS // max(len(gl), 1))

    def blocks():
        for start in range(0, len(ql), step):
            end = min(start + step, len(ql))
            good, junk = good_and_junk(ql[start:end, None], qc[start:end, None], gl[None, :], gc[None, :])
            yield start, end, good, junk

    positives = []
    for start, end, good, _ in blocks():
        qi, gi = good.nonzero(as_tuple=True)
        positives.append((qf[start:end].to(device)[qi] * gf[gi]).sum(1) + b)
    positives = torch.cat(positives).sort().values
    if len(positives) == 0:
        raise ValueError("no positive pair (same id, other camera) among the queries and gallery")
    n_pos = len(positives)
    # the grid: cell(s) is monotonic in s, so a score in a cell without positives lies above exactly
    # the positives of the cells before; cell 0 holds everything below the lowest positive
    # (8 cells per positive: a lookup table small enough to stay in cache, about 1% of scores near a positive)
    cells = 8 * n_pos
    low, span = positives[0], positives[-1] - positives[0]
    scale = cells / span if span > 0 else torch.zeros(())

    def cell(scores):
        return ((scores - low) * scale).clamp(-1, cells + 1).int() + 1

    in_cell = torch.bincount(cell(positives).long(), minlength=cells + 3)
    # bucket * 2 + "the cell holds a positive", int32 (buckets are far below 2^30)
    lookup = ((in_cell.cumsum(0) - in_cell) * 2 + (in_cell > 0)).int().to(device)
    counts = np.zeros(n_pos + 1)
    ties = np.zeros(n_pos + 1)  # negatives equal to a positive, by the bucket of the last positive equal to it
    negatives = 0
    for start, end, good, junk in blocks():
        scores = qf[start:end].to(device) @ gf.T + b
        code = lookup[cell(scores)]
        bucket, near = code >> 1, (code & 1).bool()
        placed = torch.searchsorted(positives, scores[near], right=True)
        bucket[near] = placed.int()
        taken = good | junk
        negatives += taken.numel() - int(taken.sum())
        counts += np.bincount(bucket.cpu().numpy().ravel(), minlength=n_pos + 1)
        counts -= np.bincount(bucket[taken].cpu().numpy(), minlength=n_pos + 1)
        tied = (placed > 0) & (positives[(placed - 1).clamp(min=0)] == scores[near]) & ~taken[near]
        ties += np.bincount(placed[tied].cpu().numpy(), minlength=n_pos + 1)
    if negatives == 0:
        raise ValueError("no negative pair (another id) among the queries and gallery")
    positives = positives.cpu().numpy().astype(np.float64)
    # negatives >= positives[i]: those bucketed after i (suffix sums)
    at_least = counts[::-1].cumsum()[::-1][1:]
    last_equal = np.searchsorted(positives, positives, side="right")
    auc = float(((negatives - at_least).sum() + 0.5 * ties[last_equal].sum()) / (n_pos * negatives))
    # threshold t = positives[i] (descending i): TAR = positives >= t, FAR = negatives >= t
    first = np.searchsorted(positives, positives, side="left")
    return {"positives": n_pos, "negatives": negatives, "auc": auc, "far": (at_least / negatives)[::-1],
            "tar": ((n_pos - first) / n_pos)[::-1], "thresholds": positives[::-1]}


def summarize_roc(curve, fars=FARS):
    """ROC AUC, EER and TAR at each FAR in `fars` of a roc() curve."""
    far, tar = np.concatenate([[0.0], curve["far"]]), np.concatenate([[0.0], curve["tar"]])
    out = {"auc": curve["auc"]}
    # the staircase: from threshold i to i+1 FAR rises (TAR constant), then TAR rises (FAR constant);
    # it crosses FAR = 1 - TAR on the first such segment where FAR + TAR reaches 1
    # (the last point has TAR 1, so there is one; the first, (0, 0), lies below the line)
    k = int(np.argmax(far + tar >= 1))
    if far[k] + tar[k - 1] >= 1:
        out["eer"] = 1 - tar[k - 1]       # crossed on the horizontal part
    else:
        out["eer"] = far[k]              # crossed on the vertical part
    for f in fars:
        ok = far <= f
        out[f"tar@far={f:g}"] = float(tar[ok].max()) if ok.any() else 0.0
    return out


def threshold_at_far(negatives, far):
    """The lowest threshold t with FAR(t) = share of `negatives` scoring >= t at most `far`."""
    negatives = np.sort(np.asarray(negatives, dtype=np.float64))[::-1]
    allowed = int(np.floor(far * len(negatives)))  # negatives that may score >= t
    if allowed >= len(negatives):
        return float(negatives[-1])
    return float(np.nextafter(negatives[allowed], np.inf))


def calibrate(query, gallery, head=None, fars=FARS, symmetric=False):
    """Thresholds and probabilities from held-out pairs (few enough to hold). For cosine similarity
    and, with the head's (w, b), for its P(same): the lowest threshold at each false-accept rate in
    `fars` and the true-accept rate it gives on those pairs; and the calibration of each into
    P(same), with the pairs' share of positives as its prior: beta calibration of cosine
    (cosine_beta: a, b, c) and Platt scaling of the head's logit (head_platt: a, b). symmetric:
    the queries are the gallery (one set of images), each pair is counted once. A dict for
    thresholds.yaml."""
    (ql, qc), (gl, gc) = (tuple(np.asarray(a).reshape(-1) for a in (s.ids, s.cameras)) for s in (query, gallery))
    good, junk = good_and_junk(ql[:, None], qc[:, None], gl[None, :], gc[None, :])
    negative = ~good & ~junk
    if symmetric:
        once = np.triu(np.ones(good.shape, bool), k=1)
        good, negative = good & once, negative & once
    qf, gf = np.asarray(query.features, np.float64), np.asarray(gallery.features, np.float64)
    scores = {"cosine": qf @ gf.T}
    if head is not None:
        w, b = head
        scores["head"] = (qf * np.asarray(w, np.float64)) @ gf.T + b  # the logit; thresholds are on P(same)
    out = {"positive_pairs": int(good.sum()), "negative_pairs": int(negative.sum())}
    out["prior"] = out["positive_pairs"] / max(out["positive_pairs"] + out["negative_pairs"], 1)
    taken = good | negative
    for name, s in scores.items():
        decided = probability(s) if name == "head" else s
        thresholds = {f"far={f:g}": threshold_at_far(decided[negative], f) for f in fars}
        out[name] = thresholds
        out[f"{name}_tar"] = {k: float(np.mean(decided[good] >= t)) for k, t in thresholds.items()}
    out["cosine_beta"] = fit_beta(scores["cosine"][taken], good[taken])
    if "head" in scores:
        out["head_platt"] = dict(zip(("a", "b"), fit_platt(scores["head"][taken], good[taken])))
    return out


def fit_logistic(features, same, iterations=100):
    """Weights of P(same) = sigmoid(features @ weights + bias), (weights..., bias), fitted to pairs:
    the logistic regression of the pairs' labels, by Newton's method with step halving, with
    Platt's targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2) instead of 1 and 0, which keep the
    weights finite even when the features separate the pairs perfectly. P(same) then assumes the
    pairs' own share of positives as the prior (with_prior changes it)."""
    same = np.asarray(same, bool).ravel()
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"calibration needs positive and negative pairs; these hold {n_pos} and {n_neg}")
    x = np.column_stack([np.asarray(features, np.float64).reshape(len(same), -1), np.ones(len(same))])
    target = np.where(same, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(theta):
        z = x @ theta
        return float(np.sum(np.logaddexp(0, z) - target * z))

    # start from the fit that only knows the prior: no weight, the bias its logit
    theta = np.zeros(x.shape[1])
    theta[-1] = np.log((n_pos + 1) / (n_neg + 1))
    current = loss(theta)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.clip(x @ theta, -700, 700)))
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-12 * np.eye(x.shape[1])
        step = np.linalg.solve(hessian, x.T @ (p - target))
        scale = 1.0
        while loss(theta - scale * step) > current and scale > 1e-9:
            scale /= 2
        theta = theta - scale * step
        before, current = current, loss(theta)
        if before - current < 1e-12 * max(1.0, abs(current)):
            break
    return [float(v) for v in theta]


def fit_platt(scores, same):
    """(a, b) of P(same) = sigmoid(a * score + b) fitted to pairs (Platt scaling; fit_logistic).
    Used for the head's logit, which has no bound."""
    a, b = fit_logistic(np.asarray(scores, np.float64).reshape(-1, 1), same)
    return a, b


def beta_features(cosine):
    """ln x and -ln(1 - x) of x = (1 + cosine) / 2, the features of beta calibration."""
    x = np.clip((np.asarray(cosine, np.float64) + 1) / 2, 1e-300, 1.0)
    with np.errstate(divide="ignore"):  # x = 1 (an exact copy) gives -ln 0 = infinity: P(same) 1
        return np.log(x), -np.log1p(-x)


def fit_beta(cosine, same):
    """{a, b, c} of P(same) = sigmoid(a ln x - b ln(1 - x) + c), x = (1 + cosine) / 2: beta
    calibration (Kull, Silva Filho and Flach, AISTATS 2017), for a score with bounds. With b > 0
    an exact copy (cosine 1) gets P(same) 1, which Platt scaling's straight line cannot give.
    As its authors advise, a negative a or b is dropped and the rest fitted again, so that
    P(same) never falls as cosine rises."""
    log_x, log_rest = beta_features(cosine)
    kept = [0, 1]
    while True:
        found = fit_logistic(np.column_stack([log_x, log_rest])[:, kept], same)
        weights = dict(zip(kept, found[:-1]))
        negative = [k for k, v in weights.items() if v < 0]
        if not negative:
            return {"a": weights.get(0, 0.0), "b": weights.get(1, 0.0), "c": found[-1]}
        kept.remove(negative[0])


def beta_logit(cosine, a, b, c):
    """The logit of beta calibration's P(same) (fit_beta); infinite for an exact copy when b > 0."""
    log_x, log_rest = beta_features(cosine)
    with np.errstate(invalid="ignore"):  # b = 0 times an infinite -ln 0: no term
        rest = np.where(b > 0, b * log_rest, 0.0)
    return a * log_x + rest + c


def with_prior(logit, fitted, prior):
    """The logit of P(same) for pairs that are the same person with probability `prior`, from the
    logit fitted on pairs whose share of positives was `fitted`: the likelihood ratio stays, the
    prior odds change (Bayes' rule)."""
    return np.asarray(logit, np.float64) + np.log(prior / (1 - prior)) - np.log(fitted / (1 - fitted))


ECE_BINS = 15


def reliability_bins(p, same, bins=ECE_BINS):
    """Per bin of predicted P(same) (`bins` equal widths: bin k holds [k/bins, (k+1)/bins), 1.0 the
    last): the number of pairs, the sum of their predictions, the number of positives; and the sum
    of squared errors over all of them. Sums, so that blocks of pairs add up."""
    p, same = np.asarray(p, np.float64).ravel(), np.asarray(same, np.float64).ravel()
    which = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    return {"count": np.bincount(which, minlength=bins), "p": np.bincount(which, p, bins),
            "same": np.bincount(which, same, bins), "squared_error": float(((p - same) ** 2).sum())}


def expected_calibration_error(p, same, bins=ECE_BINS):
    """ECE: over equal-width bins of the predicted P(same), the gap between the mean prediction and
    the share of positives, weighted by the bin's share of the pairs. p may also be the sums of
    reliability_bins (then same is ignored)."""
    sums = p if isinstance(p, dict) else reliability_bins(p, same, bins)
    return float(np.abs(sums["p"] - sums["same"]).sum() / max(sums["count"].sum(), 1))


def brier_score(p, same):
    """The mean squared difference between P(same) and the label (1 same, 0 different); p may also
    be the sums of reliability_bins."""
    sums = p if isinstance(p, dict) else reliability_bins(p, same)
    return float(sums["squared_error"] / max(sums["count"].sum(), 1))


def pair_blocks(query, gallery, w=None, b=0.0, device="cpu"):
    """Every query-gallery pair of the protocol (junk left out), block by block: (scores, same) as
    numpy arrays, the score being (qf * w) @ gf.T + b as in roc()."""
    qf, gf = weighted_features(query, gallery, w, device)
    (ql, qc), (gl, gc) = query.labels(device), gallery.labels(device)
    step = max(1, BLOCK_ELEMENTS // max(len(gl), 1))
    for start in range(0, len(ql), step):
        end = min(start + step, len(ql))
        good, junk = good_and_junk(ql[start:end, None], qc[start:end, None], gl[None, :], gc[None, :])
        yield (qf[start:end].to(device) @ gf.T + b)[~junk].cpu().numpy(), good[~junk].cpu().numpy()


def pair_reliability(query, gallery, to_probability, w=None, b=0.0, device="cpu", bins=ECE_BINS):
    """reliability_bins over every query-gallery pair of the protocol of to_probability(score)
    (pair_blocks)."""
    total = {"count": np.zeros(bins, np.int64), "p": np.zeros(bins), "same": np.zeros(bins), "squared_error": 0.0}
    for scores, same in pair_blocks(query, gallery, w=w, b=b, device=device):
        block = reliability_bins(to_probability(scores), same, bins)
        for key in total:
            total[key] = total[key] + block[key]
    return total


def rates_at(query, gallery, thresholds, decided=lambda s: s, w=None, b=0.0, device="cpu"):
    """(FAR, TAR) reached over every query-gallery pair of the protocol (pair_blocks) when deciding
    "same person" at decided(score) >= t, for each t of `thresholds`: how a run's thresholds,
    picked on other pairs, fare on these."""
    thresholds = np.asarray(thresholds, np.float64).reshape(-1, 1)
    accepted = np.zeros((2, len(thresholds)))  # negatives, positives
    pairs = np.zeros(2)
    for scores, same in pair_blocks(query, gallery, w=w, b=b, device=device):
        above = decided(scores.astype(np.float64))[None, :] >= thresholds
        accepted += [(above & ~same).sum(1), (above & same).sum(1)]
        pairs += [(~same).sum(), same.sum()]
    far, tar = accepted / np.maximum(pairs, 1)[:, None]
    return far.tolist(), tar.tolist()


# The median cosine similarity of random pairs of gallery images above which search.py warns that
# the run does not tell these images apart. Measured (docs/search.md#when-the-run-cannot-tell-people-apart):
# runs searching images like those they trained on sit near 0 (the demo on its synthetic gallery
# -0.012, a real-image run on held-out Market-1501 people -0.005); the demo searching real Market-1501
# crops 0.19 and 0.23 (two demo runs; Rank@1 0.21 there), a run after one epoch 0.99.
COLLAPSED_MEDIAN = 0.15
# The same for footage, on its pairs of different people (two boxes of one frame that do not overlap):
# a street camera's people sit closer than crops of a dataset (same light, same background). On
# TUD-Campus's public detections (487 pairs): runs trained 8 and 20 epochs on real Market-1501 people
# 0.231 and 0.172 (their rankings right), the demo's synthetic run 0.361 and a real-image run after 1 epoch 0.492; the
# demo run on its own synthetic footage 0.02-0.10.
COLLAPSED_FOOTAGE_MEDIAN = 0.3


def median_pair_cosine(features, groups=None, pairs=100_000, seed=0):
    """The median cosine similarity between two images of a set of unit descriptors that belong to
    different groups (the boxes of one tracklet are one group: the same person; by default every
    image is its own): of every such pair, or of about `pairs` random ones where there are more;
    None where there is no such pair."""
    f = np.asarray(features, np.float32)
    n = len(f)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    if n < 2:
        return None
    if n * (n - 1) // 2 <= pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, pairs)
        j = (i + rng.integers(1, n, pairs)) % n  # never i itself
    apart = groups[i] != groups[j]
    if not apart.any():
        return None
    return float(np.median(np.einsum("ij,ij->i", f[i[apart]], f[j[apart]])))


def calibration_images(data_dir, height, width, batchsize, num_workers):
    """(loader, ids, cameras) of the images of a prepared tree's calibration/ (prepare.py
    --calibration: people never trained on), or None when the tree has none."""
    from torch.utils.data import DataLoader  # here: evaluate.py imports this module and should start fast

    from reid.data import image_folder, parse_names, test_transform
    if not os.path.isdir(os.path.join(data_dir, "calibration")):
        return None
    folder = image_folder(data_dir, "calibration", "--data_dir", test_transform(height, width))
    return (DataLoader(folder, batch_size=batchsize, num_workers=num_workers),
            *parse_names([path for path, _ in folder.samples]))


def calibrate_on_people(people, head, checkpoint):
    """thresholds.yaml's content from calibration/'s images (a Side): every cross-camera pair once
    (calibrate, symmetric), the identities, and that none was trained on."""
    found = calibrate(people, people, head=head, symmetric=True)
    identities = sorted(set(np.asarray(people.ids).tolist()))
    pairs = (f"{len(people)} images of {len(identities)} identities in calibration/, never trained on "
             f"({found['positive_pairs']} positive, {found['negative_pairs']} negative pairs)")
    return {"checkpoint": str(checkpoint), "pairs": pairs, "optimistic": False, "identities_trained_on": False,
            "identities": identities, **found}


def save_thresholds(folder, thresholds):
    with atomic_path(os.path.join(folder, THRESHOLDS)) as tmp:
        with open(tmp, "w") as f:
            yaml.safe_dump(thresholds, f, default_flow_style=False, sort_keys=False)


def load_thresholds(folder):
    """The run's calibrated thresholds (a dict), or None when it has none."""
    path = os.path.join(folder, THRESHOLDS)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return yaml.safe_load(f)
