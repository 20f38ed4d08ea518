"""Grouping unlabelled descriptors into pseudo-identities, never with an N x N matrix: adapt.py's
step between describing the target's images and training on them.

    neighbours   each descriptor's k nearest by cosine: exactly (blocks of a matrix product) up to
                 EXACT_LIMIT descriptors, past it by faiss's inverted file (IVF, the search of
                 Johnson et al., "Billion-scale similarity search with GPUs", 2019)
    jaccard      the k-reciprocal Jaccard distance of Zhong et al. (CVPR 2017) on those neighbour
                 pairs only (metrics.reciprocal_vectors), as SpCL (Ge et al., NeurIPS 2020) and MMT
                 (Ge et al., ICLR 2020) group by it rather than by raw distances, which are weak
                 across cameras
    dbscan       DBSCAN (Ester et al., KDD 1996) on that sparse graph: an image with min_samples
                 neighbours within eps (itself counted) is a core; cores within eps of each other
                 form a group (connected components); any other image joins the group of its
                 nearest core within eps, or is left out (-1)
    auto_eps     eps read off the graph's own distances instead of set by hand: the mean of the
                 smallest share RHO of all pairs' distances, MMT's rule, where pairs outside the
                 neighbour lists count as unrelated (distance 1)

Known links of footage: boxes of one tracklet are one person (must), boxes of one frame are
different people (cannot); a must pair is joined at distance 0, a cannot pair's edge is dropped.
"""
import math

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch

from reid.evaluation.metrics import BLOCK_ELEMENTS, reciprocal_vectors

# Up to this many descriptors the neighbours are found exactly; past it faiss's IVF search is used
# (bench/cluster_speed.py measures both)
EXACT_LIMIT = 200_000
# faiss IVF: cells (a few per square root of N, as faiss's guidelines suggest) and cells searched
IVF_CELLS_PER_SQRT = 4
IVF_PROBE = 16
# SpCL's and Cluster Contrast's k-reciprocal settings (k1 = 30 there; 20 is Zhong et al.'s)
K1, K2 = 20, 6
MIN_SAMPLES = 4
RHO = 1.6e-3  # MMT's share of the closest pairs that sets eps


def neighbours(features, k):
    """(indices, cosines), N x (k + 1): each row's k + 1 nearest descriptors by cosine similarity
    (the descriptors L2-normalised), nearest first, normally itself first."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    n, k = len(x), min(k, len(x) - 1)
    if n > EXACT_LIMIT:
        import faiss  # imported here: only large groupings need it

        cells = int(IVF_CELLS_PER_SQRT * math.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(x.shape[1]), x.shape[1], cells, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, min(n, 64 * cells), replace=False)
        index.train(x[np.sort(sample)])
        index.add(x)
        index.nprobe = IVF_PROBE
        cosines, indices = index.search(x, k + 1)
        return indices.astype(np.int64), cosines
    t = torch.from_numpy(x)
    indices = np.empty((n, k + 1), np.int64)
    cosines = np.empty((n, k + 1), np.float32)
    step = max(1, BLOCK_ELEMENTS // n)
    for start in range(0, n, step):
        top = (t[start:start + step] @ t.T).topk(k + 1, dim=1)
        indices[start:start + step], cosines[start:start + step] = top.indices.numpy(), top.values.numpy()
    return indices, cosines


def jaccard(features, knn, k2=K2, lookups=1 << 24):
    """The k-reciprocal Jaccard distance of each row's pairs in `knn` (N x (k1 + 1), from
    neighbours()), N x (k1 + 1): 1 - sum(min(V_i, V_j)) / sum(max(V_i, V_j)), 0 for the same images'
    V, 1 for V with nothing in common. Computed `lookups` entries of V at a time."""
    feats = torch.nn.functional.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1)
    knn_t = torch.as_tensor(knn)
    n, width = knn.shape
    v = reciprocal_vectors(feats, knn_t, torch.ones(n), width - 1, min(k2, n))
    v.sort_indices()
    keys = np.repeat(np.arange(n, dtype=np.int64), np.diff(v.indptr)) * n + v.indices
    lengths = np.diff(v.indptr)
    distance = np.empty(knn.shape, np.float64)
    rows = max(1, lookups // max(1, int(lengths.max(initial=1)) * width))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        first = np.repeat(np.arange(start, stop), width)          # each pair (i, j) of these rows
        second = knn[start:stop].reshape(-1)
        count = lengths[first]
        pair = np.repeat(np.arange(len(first)), count)             # each nonzero of V_i, for its pair
        offset = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        at = v.indptr[first][pair] + offset
        wanted = second[pair] * n + v.indices[at]                   # V_j at the column of that nonzero
        found = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        other = np.where(keys[found] == wanted, v.data[found], 0.0)
        overlap = np.bincount(pair, weights=np.minimum(v.data[at], other), minlength=len(first))
        # V's rows sum to 1, so sum(max) = 2 - sum(min)
        distance[start:stop] = (1 - overlap / (2 - overlap)).reshape(stop - start, width)
    return distance


def auto_eps(distance, n, rho=RHO):
    """MMT's eps: the mean of the smallest share `rho` of the N (N - 1) / 2 pairs' distances, read
    from the neighbour pairs' `distance` (pairs not listed count as 1, unrelated)."""
    off = distance[:, 1:].reshape(-1)
    wanted = max(1, int(rho * n * (n - 1) / 2))
    # each pair is listed up to twice (i in j's list and j in i's)
    close = np.sort(off)[:min(len(off), 2 * wanted)]
    close = np.concatenate([close, np.ones(max(0, 2 * wanted - len(close)))])
    return float(close.mean())


def dbscan(knn, distance, eps, min_samples=MIN_SAMPLES, must=None, cannot=None):
    """Group labels (0, 1, ...; -1 left out) by DBSCAN on the sparse graph of the pairs of `knn`
    whose `distance` is below eps; `must` and `cannot`: (first, second) index arrays of pairs known
    to be one person (joined at distance 0) or two (their edge dropped)."""
    n, width = knn.shape
    first = np.repeat(np.arange(n), width)
    second = knn.reshape(-1)
    d = distance.reshape(-1)
    keep = (d < eps) & (first != second)
    first, second, d = first[keep], second[keep], d[keep]
    if must is not None and len(must[0]):
        first = np.concatenate([first, must[0]])
        second = np.concatenate([second, must[1]])
        d = np.concatenate([d, np.zeros(len(must[0]))])
    rows, cols, d = np.concatenate([first, second]), np.concatenate([second, first]), np.concatenate([d, d])
    if cannot is not None and len(cannot[0]):
        banned = np.concatenate([cannot[0] * n + cannot[1], cannot[1] * n + cannot[0]])
        allowed = ~np.isin(rows * n + cols, banned)
        rows, cols, d = rows[allowed], cols[allowed], d[allowed]
    # each pair once, at its smallest distance (+ a tiny offset: a stored 0 would read as no edge)
    order = np.lexsort((d, rows * n + cols))
    unique = np.unique((rows * n + cols)[order], return_index=True)[1]
    pick = order[unique]
    graph = scipy.sparse.csr_matrix((d[pick] + 1e-9, (rows[pick], cols[pick])), shape=(n, n))
    core = np.diff(graph.indptr) + 1 >= min_samples
    cores = graph[core][:, core]
    _, core_labels = scipy.sparse.csgraph.connected_components(cores, directed=False)
    labels = np.full(n, -1, np.int64)
    labels[core] = core_labels
    # a border image joins the group of its nearest core
    border = np.flatnonzero(~core)
    to_core = graph[border][:, core].tocoo()
    if to_core.nnz:
        order = np.lexsort((to_core.data, to_core.row))
        rows, cols = to_core.row[order], to_core.col[order]
        firsts = np.unique(rows, return_index=True)[1]
        labels[border[rows[firsts]]] = core_labels[cols[firsts]]
    return relabel(labels)


def restricted(pairs, local):
    """The `pairs` (index arrays, or None) whose two ends have a `local` number (not -1), in it."""
    if pairs is None:
        return None
    a, b = (local[np.asarray(p, np.int64)] for p in pairs)
    inside = (a >= 0) & (b >= 0)
    return a[inside], b[inside]


def relabel(labels):
    """Labels renumbered 0, 1, ... in order of first appearance, -1 kept."""
    out = np.full(len(labels), -1, np.int64)
    grouped = labels >= 0
    _, first, inverse = np.unique(labels[grouped], return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    out[grouped] = rank[inverse]
    return out


def pseudo_identities(features, cameras, across, eps, k1=K1, k2=K2, min_samples=MIN_SAMPLES, must=None, cannot=None):
    """Group labels (-1: left out) of descriptors taken by `cameras` (one value per descriptor);
    `must` and `cannot` pairs (index arrays) as dbscan() takes them.
    across=False: each camera's descriptors are grouped apart, and a group holds one camera's
    images (people are easier to tell within a camera: same light, same background). across=True:
    all are grouped together, each descriptor first less its camera's mean (the camera's own cast,
    which otherwise outweighs the person across cameras) and normalised again."""
    features = np.asarray(features, np.float32)
    cameras = np.asarray(cameras)
    if across:
        centred = features.copy()
        for camera in np.unique(cameras):
            centred[cameras == camera] -= features[cameras == camera].mean(0)
        centred /= np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
        parts = [(np.arange(len(features)), centred)]
    else:
        parts = [(np.flatnonzero(cameras == c), features[cameras == c]) for c in np.unique(cameras)]
    labels = np.full(len(features), -1, np.int64)
    for rows, x in parts:
        if len(rows) < 2:
            continue
        local = np.full(len(features), -1)
        local[rows] = np.arange(len(rows))
        knn, _ = neighbours(x, k1)
        found = dbscan(knn, jaccard(x, knn, k2), eps, min_samples, must=restricted(must, local),
                       cannot=restricted(cannot, local))
        labels[rows[found >= 0]] = found[found >= 0] + labels.max() + 1
    return relabel(labels)
