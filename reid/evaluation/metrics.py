"""The ranking protocol of Market-1501, once, for every script that scores features.

For each query, gallery images are ranked by score, highest first: cosine
similarity by default (the dot product of L2-normalised features), or the
negated k-reciprocal distance with re-ranking. Equal scores keep gallery order
(the earlier image in the feature file ranks first), so the same features
always give the same numbers.
    good        same id as the query, other camera
    junk        same id and same camera, or id -1; removed from the ranking
    distractor  id 0: an ordinary negative
CMC counts from the first good match once junk is removed. With the i-th good
match (1-based) at position r_i (1-based, junk removed) and n good matches:
    AP (the original's, Market-1501's trapezoid rule)
        sum_i (1/n) * (p_prev + p) / 2,  p = i / r_i,  p_prev = (i - 1) / (r_i - 1), or 1 when r_i = 1
    AP (non-interpolated: torchreid, fast-reid)   sum_i (1/n) * i / r_i
    INP (mINP, Ye et al. 2021)                    n / r_n
A query without a good match is skipped: it counts in no average.

Only the positions of the good matches are needed, so no gallery ranking is
materialised: each row of scores is sorted by value (a SIMD sort in numpy on
the CPU) and the good matches' scores are looked up in it by binary search.
Rows where a good match's score ties with another image fall back to a
stable full sort, which applies the gallery-order rule.
"""
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch

# Scores processed at once (queries x gallery); bounds memory, whatever the size
# of the test set, to a few arrays of this many elements.
BLOCK_ELEMENTS = 1 << 24
METRICS = ("first", "ap", "ap_standard", "inp")


@dataclass(frozen=True)
class Side:
    """One side of the protocol, the queries or the gallery: each image's descriptor (a row of
    `features`), identity and camera, as arrays or tensors."""
    features: object
    ids: object
    cameras: object

    @classmethod
    def of(cls, arrays, name):
        """The side `name` ("query", "gallery", "mquery") of a feature file's arrays
        (data.load_features): {name}_f, {name}_label, {name}_cam."""
        return cls(arrays[f"{name}_f"], arrays[f"{name}_label"], arrays[f"{name}_cam"])

    def __len__(self):
        return len(self.features)

    def __getitem__(self, rows):
        """The images `rows` (a slice, indices or a mask) of this side."""
        return Side(self.features[rows], self.ids[rows], self.cameras[rows])

    def labels(self, device="cpu"):
        """(ids, cameras) as flat int64 tensors on `device`."""
        return tuple(torch.as_tensor(np.asarray(a).reshape(-1), dtype=torch.int64).to(device)
                     for a in (self.ids, self.cameras))


def good_and_junk(ql, qc, gl, gc):
    """The rule above: (good, junk) masks of gallery images (ids gl, cameras gc) for queries
    (ql, qc), element by element (tensors or arrays that broadcast)."""
    same_id = ql == gl
    junk = (same_id & (qc == gc)) | (gl == -1)
    return same_id & ~junk, junk


def ranking(qf, gf):
    """Gallery indices of each query, best first; equal scores keep gallery order."""
    return torch.sort(qf @ gf.T, dim=1, descending=True, stable=True).indices


def rank_queries(query, gallery, device="cpu", score_block=None):
    """Per-query results of the protocol for Sides `query` and `gallery`, as numpy arrays in a
    dict: first (0-based position of the first good match, -1 if skipped), ap, ap_standard, inp
    (nan if skipped). By default scores are cosine similarities of the features;
    score_block(start, end), if given, returns a new tensor of the scores of queries start:end
    against the whole gallery."""
    device = torch.device(device)
    (ql, qc), (gl, gc) = query.labels(), gallery.labels()
    out = {k: np.full(len(ql), -1, dtype=np.int64) if k == "first" else np.full(len(ql), np.nan) for k in METRICS}
    # id -1 is junk for every query: leave it out of the scores altogether
    columns = (gl != -1).nonzero().squeeze(1)
    if len(columns) == 0:
        return out
    gl, gc = gl[columns], gc[columns]
    if score_block is None:
        qf = torch.as_tensor(np.asarray(query.features), dtype=torch.float32)
        gf = torch.as_tensor(np.asarray(gallery.features), dtype=torch.float32)[columns].to(device)

        def scores(start, end):
            return qf[start:end].to(device) @ gf.T
    else:
        def scores(start, end):
            return score_block(start, end)[:, columns.to(device)]
    # the gallery grouped by id, so that a query's same-id images are one slice of by_id
    by_id = torch.argsort(gl, stable=True)
    ids, counts = torch.unique_consecutive(gl[by_id], return_counts=True)
    starts = counts.cumsum(0) - counts
    step = max(1, BLOCK_ELEMENTS // len(columns))
    for start in range(0, len(ql), step):
        end = min(start + step, len(ql))
        found = torch.searchsorted(ids, ql[start:end]).clamp(max=len(ids) - 1)
        n_same = torch.where(ids[found] == ql[start:end], counts[found], 0)
        slot = torch.arange(int(n_same.max()))
        same = by_id[(starts[found][:, None] + slot).clamp(max=len(by_id) - 1)]
        valid = slot[None, :] < n_same[:, None]
        good, junk = good_and_junk(ql[start:end, None], qc[start:end, None], gl[same], gc[same])
        good, junk = good & valid, junk & valid
        if not good.any():
            continue
        position = _good_positions(scores(start, end), same.to(device), good.to(device), junk.to(device))
        for k, v in _block_metrics(position, good.sum(1).to(device)).items():
            out[k][start:end] = v
    return out


def _sorted_values(scores):
    """Each row's scores sorted ascending: numpy's SIMD sort on the CPU, threaded over rows
    (numpy releases the GIL while sorting); torch on other devices."""
    if scores.device.type != "cpu":
        return torch.sort(scores, dim=1).values
    rows = scores.numpy()
    out = np.empty_like(rows)
    bounds = np.linspace(0, len(rows), min(torch.get_num_threads(), len(rows)) + 1).astype(int)

    def sort(k):
        # in place, a few rows at a time: no temporary arrays, and the rows stay in cache
        for a in range(bounds[k], bounds[k + 1], 64):
            b = min(a + 64, bounds[k + 1])
            out[a:b] = rows[a:b]
            out[a:b].sort(axis=1)

    with ThreadPoolExecutor(len(bounds) - 1) as pool:
        list(pool.map(sort, range(len(bounds) - 1)))
    return torch.from_numpy(out)


def _good_positions(scores, same, good, junk):
    """1-based positions (junk removed) of each query's good matches, ascending; rows padded
    with a position past the gallery. same: the query's same-id gallery columns, with masks."""
    n, big = scores.shape[1], scores.shape[1] + 1
    rows = torch.arange(len(scores), device=scores.device)[:, None].expand_as(same)
    scores[rows[junk], same[junk]] = -torch.inf          # junk sorts last: it never precedes a match
    g = scores.gather(1, same)
    ordered = _sorted_values(scores)
    above = n - torch.searchsorted(ordered, g, right=True)       # images scoring higher
    at_least = n - torch.searchsorted(ordered, g, right=False)   # ... or the same
    position = torch.where(good, above + 1, big)
    tied = ((at_least - above > 1) & good).any(1)
    if tied.any():
        # another image has exactly a good match's score: rank by a stable sort (gallery order)
        t = tied.nonzero().squeeze(1)
        order = torch.sort(scores[t], dim=1, descending=True, stable=True).indices
        place = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=scores.device).expand_as(order))
        position[t] = torch.where(good[t], place.gather(1, same[t]) + 1, big)
    return torch.sort(position, dim=1).values


def _block_metrics(position, n_good):
    """first, ap, ap_standard and inp of a block from its good-match positions."""
    i = torch.arange(1, position.shape[1] + 1, device=position.device, dtype=torch.float64)
    r = position.double()
    valid = i[None, :] <= n_good[:, None]
    precision = i / r
    previous = torch.where(r > 1, (i - 1) / (r - 1).clamp(min=1), torch.ones_like(r))
    n = n_good.double()
    has = n_good > 0
    zero = torch.zeros_like(r)
    out = {
        "first": torch.where(has, position[:, 0] - 1, -1),
        "ap": torch.where(valid, (previous + precision) / 2, zero).sum(1) / n,
        "ap_standard": torch.where(valid, precision, zero).sum(1) / n,
        "inp": n / r.gather(1, (n_good - 1).clamp(min=0)[:, None]).squeeze(1),
    }
    out = {k: torch.where(has, v, torch.nan) if k != "first" else v for k, v in out.items()}
    return {k: v.cpu().numpy() for k, v in out.items()}


def summarize(ranks, cmc=(1, 5, 10)):
    """Rank@k, mAP (trapezoid), mAP (non-interpolated) and mINP over the queries with a good match."""
    valid = ranks["first"] >= 0
    if not valid.any():
        raise ValueError("no query has a good match in the gallery (same id, other camera)")
    out = {f"Rank@{k}": float(np.mean(ranks["first"][valid] < k)) for k in cmc}
    out["mAP"] = float(np.mean(ranks["ap"][valid]))
    out["mAP_standard"] = float(np.mean(ranks["ap_standard"][valid]))
    out["mINP"] = float(np.mean(ranks["inp"][valid]))
    return out


# the original's result line as format_lines writes it ("multi " first for multi-query)
RESULT_LINE = re.compile(r"^(multi )?Rank@1:(\d\.\d{6}) Rank@5:(\d\.\d{6}) Rank@10:(\d\.\d{6}) mAP:(\d\.\d{6})$", re.M)


def format_lines(summary, prefix=""):
    """The original's result line (Rank@1:0.xxxxxx Rank@5:... mAP:...), then the other AP convention."""
    original = " ".join(f"{k}:{summary[k]:f}" for k in summary if k.startswith("Rank@")) + f" mAP:{summary['mAP']:f}"
    other = f"non-interpolated AP (torchreid, fast-reid): mAP:{summary['mAP_standard']:f} mINP:{summary['mINP']:f}"
    return [prefix + original, prefix + other]


def k_reciprocal_scores(qf, gf, k1=20, k2=6, lambda_value=0.3, device="cpu"):
    """score_block for rank_queries: minus the k-reciprocal re-ranked distance of Zhong et al.,
    "Re-ranking Person Re-identification with k-reciprocal Encoding" (CVPR 2017).

    Queries and gallery are pooled (N images). d is the squared Euclidean distance of the
    L2-normalised features, each row divided by its largest value. R(p, k) holds the images
    among p's k+1 nearest whose own k+1 nearest include p; it grows by R(q, k1/2) for each q in
    R(p, k1) sharing more than 2/3 of it. V_p puts weight exp(-d(p, g)) on each g of that set
    (normalised to sum 1) and is then averaged over p's k2 nearest (local query expansion).
    The distance is (1 - lambda) * Jaccard(V_p, V_g) + lambda * d(p, g).
    Nothing N x N is kept: neighbours come from the distance in blocks and V is sparse, so
    memory grows with N, not N^2."""
    feats = torch.nn.functional.normalize(torch.as_tensor(np.concatenate([qf, gf]), dtype=torch.float32), dim=1)
    nq, n = len(qf), len(feats)
    k1, k2 = min(k1, n - 1), min(k2, n)
    knn = torch.empty(n, k1 + 1, dtype=torch.int64)
    row_max = torch.empty(n)
    step = max(1, BLOCK_ELEMENTS // n)
    for start in range(0, n, step):
        d = (2 - 2 * feats[start:start + step] @ feats.T).clamp(min=0)
        row_max[start:start + step] = d.max(1).values.clamp(min=1e-12)
        knn[start:start + step] = d.topk(k1 + 1, dim=1, largest=False).indices

    v = reciprocal_vectors(feats, knn, row_max, k1, k2)
    gallery_v = v[nq:].tocsc()
    qf_n, gf_n = feats[:nq], feats[nq:]

    def score_block(start, end):
        jaccard = np.empty((end - start, n - nq))
        for a, b in _pair_chunks(v, gallery_v, start, end):
            rows = v[a:b].tocoo()
            lengths = np.diff(gallery_v.indptr)[rows.col]
            offsets = (np.repeat(gallery_v.indptr[rows.col] - (np.cumsum(lengths) - lengths), lengths)
                       + np.arange(lengths.sum()))
            overlap = np.bincount(np.repeat(rows.row, lengths) * (n - nq) + gallery_v.indices[offsets],
                                  weights=np.minimum(np.repeat(rows.data, lengths), gallery_v.data[offsets]),
                                  minlength=(b - a) * (n - nq)).reshape(b - a, n - nq)
            jaccard[a - start:b - start] = 1 - overlap / (2 - overlap)
        d = (2 - 2 * qf_n[start:end] @ gf_n.T).clamp(min=0) / row_max[start:end, None]
        final = (1 - lambda_value) * torch.from_numpy(jaccard).float() + lambda_value * d
        return (-final).to(device)

    return score_block


def reciprocal_vectors(feats, knn, row_max, k1, k2):
    """The k-reciprocal vectors V of Zhong et al. (k_reciprocal_scores), sparse, one row per image:
    from `knn`, each image's k1 + 1 nearest (itself first) in whatever way they were found (exactly
    here, approximately by grouping.neighbours), and `row_max`, what each row's squared distances
    are divided by before exp(-d) weighs them (ones: not divided). Memory grows with N x k1^2."""
    n = len(feats)

    def reciprocal(neighbours):
        """Mask of the neighbours whose own lists hold the image (rows chunked to bound memory)."""
        mask = torch.empty_like(neighbours, dtype=torch.bool)
        rows = max(1, BLOCK_ELEMENTS // neighbours.shape[1] ** 2)
        for start in range(0, n, rows):
            own = torch.arange(start, min(start + rows, n))[:, None, None]
            mask[start:start + rows] = (neighbours[neighbours[start:start + rows]] == own).any(-1)
        return mask

    recip = reciprocal(knn)
    half = knn[:, :int(round(k1 / 2)) + 1]
    recip_half = reciprocal(half)
    members, weights = [], []
    rows = max(1, BLOCK_ELEMENTS // (knn.shape[1] ** 2 * half.shape[1]))
    for start in range(0, n, rows):
        i = slice(start, min(start + rows, n))
        cand, cand_mask = half[knn[i]], recip_half[knn[i]]                  # R(q, k1/2) of each neighbour q
        shared = ((cand[..., None] == knn[i][:, None, None, :]) & recip[i][:, None, None, :]).any(-1) & cand_mask
        grow = recip[i] & (shared.sum(-1) > 2 / 3 * cand_mask.sum(-1))
        ids = torch.cat([torch.where(recip[i], knn[i], n),
                         torch.where(grow[..., None] & cand_mask, cand, n).flatten(1)], 1)
        ids = ids.sort(1).values
        ids[:, 1:][ids[:, 1:] == ids[:, :-1]] = n                           # each image once
        row = torch.arange(i.start, i.stop)[:, None].expand_as(ids)
        keep = ids < n
        r, c = row[keep], ids[keep]
        w = torch.exp(-(2 - 2 * (feats[r] * feats[c]).sum(1)).clamp(min=0) / row_max[r])
        members.append((r, c))
        weights.append(w)
    r = torch.cat([m[0] for m in members]).numpy()
    c = torch.cat([m[1] for m in members]).numpy()
    w = torch.cat(weights).double().numpy()
    v = scipy.sparse.csr_matrix((w, (r, c)), shape=(n, n))
    v = scipy.sparse.diags(1 / np.asarray(v.sum(1)).ravel()) @ v
    if k2 > 1:
        expand = scipy.sparse.csr_matrix(
            (np.full(n * k2, 1 / k2), (np.repeat(np.arange(n), k2), knn[:, :k2].reshape(-1).numpy())), shape=(n, n))
        v = (expand @ v).tocsr()
    return v.tocsr()


def _pair_chunks(v, gallery_v, start, end, pairs=1 << 23):
    """Split queries start:end into runs that pair at most about `pairs` nonzeros of V with the gallery's."""
    rows = v[start:end].copy()
    rows.data = np.diff(gallery_v.indptr)[rows.indices].astype(np.float64)
    cumulative = np.cumsum(np.asarray(rows.sum(1)).ravel())
    cuts = np.searchsorted(cumulative, np.arange(pairs, cumulative[-1], pairs)) + start if len(cumulative) else []
    edges = np.unique(np.concatenate([[start], cuts, [end]])).astype(int)
    return list(zip(edges[:-1], edges[1:]))


def multi_query_features(query, multi):
    """The query Side with each query's feature replaced by the mean feature of the multi-query
    images (Side `multi`) with its id and camera (as the original); a query with none keeps its own."""
    out = np.array(query.features, dtype=np.float32, copy=True)
    groups = {}
    for i, key in enumerate(zip(np.asarray(multi.ids).tolist(), np.asarray(multi.cameras).tolist())):
        groups.setdefault(key, []).append(i)
    for i, key in enumerate(zip(np.asarray(query.ids).tolist(), np.asarray(query.cameras).tolist())):
        if key in groups:
            out[i] = np.asarray(multi.features)[groups[key]].mean(axis=0)
    return Side(out, query.ids, query.cameras)
