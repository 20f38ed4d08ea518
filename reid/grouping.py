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

Known links of footage: boxes of one tracklet are one person (must), boxes of one frame are
different people (cannot); a must pair is joined at distance 0, and no group holds a cannot pair.
"""
import math

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch

from reid.evaluation.metrics import BLOCK_ELEMENTS, reciprocal_vectors

# Up to this many descriptors the neighbours are found exactly; past it faiss's IVF search is used
# (bench/speed/cluster_speed.py measures both)
EXACT_LIMIT = 200_000
# faiss IVF: cells (a few per square root of N, as faiss's guidelines suggest), cells searched, and
# how its k-means learns the cells: from 40 descriptors a cell (faiss warns below 39), 10 iterations,
# which at a million descriptors takes about as long as the search itself instead of most of the time
IVF_CELLS_PER_SQRT = 4
IVF_PROBE = 16
IVF_TRAIN_PER_CELL = 40
IVF_ITERATIONS = 10
# k-reciprocal and DBSCAN settings, measured on CUHK03 (docs/adaptation.md): k1 10, k2 3, groups from
# 2 images, where SpCL and Cluster Contrast take k1 30, k2 6 and 4 on datasets with more images a person
K1, K2 = 10, 3
MIN_SAMPLES = 2
EPS = 0.5
AUTO = "auto"  # an eps that pseudo_identities takes from the descriptors themselves (automatic_eps)


def neighbours(features, k):
    """(indices, cosines), N x (k + 1): each row's k + 1 nearest descriptors by cosine similarity
    (the descriptors L2-normalised), nearest first, normally itself first."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    n, k = len(x), min(k, len(x) - 1)
    if n > EXACT_LIMIT:
        import faiss  # imported here: only large groupings need it

        cells = int(IVF_CELLS_PER_SQRT * math.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(x.shape[1]), x.shape[1], cells, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = IVF_ITERATIONS
        sample = np.random.default_rng(0).choice(n, min(n, IVF_TRAIN_PER_CELL * cells), replace=False)
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


def automatic_eps(knn, distance):
    """An eps for dbscan() from the descriptors alone, no labels: the median over images of the
    Jaccard distance to their nearest other image, so that about half of them become cores at
    min_samples 2, however near a camera's people look to the network. On CUHK03 with a Market-1501
    run it groups 6,563 of 13,125 images at purity 0.60 (eps 0.16 to 0.42 by camera), where the
    hand-set 0.5 groups 10,174 at 0.49 (docs/adaptation.md)."""
    nearest = np.where(knn != np.arange(len(knn))[:, None], distance, 1.0).min(1)
    return float(np.median(nearest))


def dbscan(knn, distance, eps, min_samples=MIN_SAMPLES, must=None, cannot=None):
    """Group labels (0, 1, ...; -1 left out) by DBSCAN on the sparse graph of the pairs of `knn`
    whose `distance` is below eps; `must` and `cannot`: (first, second) index arrays of pairs known
    to be one person (joined at distance 0) or two (their edge dropped, and no group formed that
    holds both: apart_components)."""
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
    if cannot is not None and len(cannot[0]):
        core_labels = apart_components(cores.tocoo(), restricted(cannot, np.where(core, np.cumsum(core) - 1, -1)))
    else:
        core_labels = scipy.sparse.csgraph.connected_components(cores, directed=False)[1]
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
    if cannot is not None and len(cannot[0]):
        # a border image is left out of a group that holds someone it is known not to be
        a, b = cannot
        clash = (labels[a] >= 0) & (labels[a] == labels[b])
        labels[np.concatenate([a[clash & ~core[a]], b[clash & ~core[b]]])] = -1
    return relabel(labels)


def apart_components(edges, cannot):
    """Connected components of a graph (scipy COO, distances as data) that never join two images of
    a `cannot` pair, however many links chain them: edges are taken nearest first (Kruskal's order),
    and one that would join two components holding the two ends of a cannot pair is skipped. Each
    component's set of components it may not join is merged with it (small: a frame's other people)."""
    n = edges.shape[0]
    parent = np.arange(n)
    apart = [set() for _ in range(n)]
    for a, b in zip(*cannot):
        apart[a].add(b)
        apart[b].add(a)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    for k in np.argsort(edges.data, kind="stable"):
        a, b = root(edges.row[k]), root(edges.col[k])
        if a == b or any(root(c) == b for c in apart[a]):
            continue
        parent[b] = a
        apart[a] |= apart[b]
    return np.unique([root(i) for i in range(n)], return_inverse=True)[1]


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


def pseudo_identities(features, cameras, across, eps, k1=K1, k2=K2, min_samples=MIN_SAMPLES, must=None, cannot=None,
                      eps_used=None):
    """Group labels (-1: left out) of descriptors taken by `cameras` (one value per descriptor);
    `must` and `cannot` pairs (index arrays) as dbscan() takes them. eps: a Jaccard distance, or
    AUTO for automatic_eps() of each part grouped (a camera, or all); each part's eps is appended
    to the list `eps_used`, where one is given.
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
        distance = jaccard(x, knn, k2)
        part_eps = automatic_eps(knn, distance) if eps == AUTO else eps
        if eps_used is not None:
            eps_used.append(part_eps)
        found = dbscan(knn, distance, part_eps, min_samples, must=restricted(must, local),
                       cannot=restricted(cannot, local))
        labels[rows[found >= 0]] = found[found >= 0] + labels.max() + 1
    return relabel(labels)
