"""The ranking protocol of Market-1501, once, for every script that scores features.

For each query, gallery images are ranked by cosine similarity (features are
L2-normalised, so by dot product), highest first; equal scores keep gallery
order (a stable sort), so the same features always give the same numbers.
    good        same id as the query, other camera
    junk        same id and same camera, or id -1; removed from the ranking
    distractor  id 0: an ordinary negative
CMC counts from the first good match once junk is removed. AP is the
Market-1501 code's trapezoid rule: at the i-th good match (1-based) found at
position r (1-based, junk removed) it adds (1/ngood) * (p_prev + p) / 2 with
p = i / r and p_prev = (i - 1) / (r - 1), or 1 when r = 1.
A query without a good match is skipped: it counts in neither CMC nor mAP.
"""
import numpy as np
import torch

# Elements of the query x gallery block processed at once; bounds memory
# (a few int64 arrays of this size) whatever the size of the test set.
BLOCK_ELEMENTS = 1 << 22


def rank_queries(qf, ql, qc, gf, gl, gc, device="cpu"):
    """Per query: 0-based position of the first good match after junk removal (-1 if the
    query has no good match) and its trapezoid AP (nan if skipped)."""
    device = torch.device(device)
    gf = torch.as_tensor(gf, dtype=torch.float32, device=device)
    gl = torch.as_tensor(gl, device=device)
    gc = torch.as_tensor(gc, device=device)
    qf = torch.as_tensor(qf, dtype=torch.float32)
    ql = torch.as_tensor(ql)
    qc = torch.as_tensor(qc)
    first = np.empty(len(qf), dtype=np.int64)
    ap = np.empty(len(qf), dtype=np.float64)
    step = max(1, BLOCK_ELEMENTS // max(1, len(gf)))
    for start in range(0, len(qf), step):
        end = min(start + step, len(qf))
        f, a = _rank_block(qf[start:end].to(device), ql[start:end].to(device), qc[start:end].to(device), gf, gl, gc)
        first[start:end] = f
        ap[start:end] = a
    return first, ap


def match_masks(ql, qc, gl, gc):
    """(good, junk) boolean matrices, queries x gallery, by the rules above (torch tensors)."""
    same_id = ql[:, None] == gl[None, :]
    same_cam = qc[:, None] == gc[None, :]
    good = same_id & ~same_cam & (gl[None, :] != -1)
    junk = (same_id & same_cam) | (gl[None, :] == -1)
    return good, junk


def ranking(qf, gf):
    """Gallery indices of each query, best first; equal scores keep gallery order."""
    return torch.sort(qf @ gf.T, dim=1, descending=True, stable=True).indices


def _rank_block(qf, ql, qc, gf, gl, gc):
    order = ranking(qf, gf)
    good, junk = match_masks(ql, qc, gl, gc)
    good, junk = good.gather(1, order), junk.gather(1, order)
    position = torch.cumsum(~junk, dim=1) - 1          # place in the ranking once junk is gone
    hits = torch.cumsum(good, dim=1)                    # i at the i-th good match
    ngood = hits[:, -1]
    pos = position.double()
    precision = hits.double() / (pos + 1)
    previous = torch.where(pos > 0, (hits.double() - 1) / pos.clamp(min=1), torch.ones_like(pos))
    ap = torch.where(good, (previous + precision) / 2, torch.zeros_like(pos)).sum(1) / ngood.clamp(min=1)
    first = position.gather(1, good.int().argmax(1, keepdim=True)).squeeze(1)
    valid = ngood > 0
    first = torch.where(valid, first, torch.full_like(first, -1))
    ap = torch.where(valid, ap, torch.full_like(ap, float("nan")))
    return first.cpu().numpy(), ap.cpu().numpy()


def summarize(first, ap, ranks=(1, 5, 10)):
    """Rank@k and mAP over the queries that have a good match."""
    valid = first >= 0
    if not valid.any():
        raise ValueError("no query has a good match in the gallery (same id, other camera)")
    out = {f"Rank@{k}": float(np.mean(first[valid] < k)) for k in ranks}
    out["mAP"] = float(np.mean(ap[valid]))
    return out


def format_line(summary, prefix=""):
    """The original's result line: Rank@1:0.xxxxxx Rank@5:... mAP:..."""
    return prefix + " ".join(f"{k}:{v:f}" for k, v in summary.items())


def multi_query_features(qf, ql, qc, mqf, mql, mqc):
    """Each query replaced by the mean feature of the multi-query images with its id and
    camera (as the original); a query with none keeps its own feature."""
    out = np.array(qf, dtype=np.float32, copy=True)
    groups = {}
    for i, key in enumerate(zip(mql.tolist(), mqc.tolist())):
        groups.setdefault(key, []).append(i)
    for i, key in enumerate(zip(ql.tolist(), qc.tolist())):
        if key in groups:
            out[i] = mqf[groups[key]].mean(axis=0)
    return out
