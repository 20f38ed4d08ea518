"""k-reciprocal re-ranking: against a dense implementation written from the paper's
definitions, and on a case whose outcome can be reasoned out."""
import numpy as np
import pytest

from reid.evaluation import metrics
from reid.evaluation.metrics import Side, k_reciprocal_scores, rank_queries, summarize


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def reference_rerank(qf, gf, k1, k2, lambda_value):
    """Dense and per image, straight from Zhong et al. (CVPR 2017)."""
    f = unit(np.concatenate([qf, gf]))
    n, nq = len(f), len(qf)
    d = np.clip(2 - 2 * f @ f.T, 0, None)
    d = d / d.max(1, keepdims=True)
    rank = np.argsort(d, axis=1, kind="stable")

    def reciprocal(i, k):
        return [j for j in rank[i, :k + 1] if i in rank[j, :k + 1]]

    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = set(r)
        for c in r:
            rc = reciprocal(c, int(round(k1 / 2)))
            if len(set(rc) & set(r)) > 2 / 3 * len(rc):
                expanded |= set(rc)
        e = sorted(expanded)
        v[i, e] = np.exp(-d[i, e]) / np.exp(-d[i, e]).sum()
    if k2 > 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    overlap = np.array([[np.minimum(v[i], v[g]).sum() for g in range(nq, n)] for i in range(nq)])
    return (1 - lambda_value) * (1 - overlap / (2 - overlap)) + lambda_value * d[:nq, nq:]


@pytest.mark.parametrize("k1, k2, lambda_value", [(20, 6, 0.3), (5, 3, 0.5), (4, 1, 0.0)])
def test_matches_the_dense_definition(monkeypatch, k1, k2, lambda_value):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(8, 16))
    qf = (centres[rng.integers(0, 8, 12)] + 0.7 * rng.normal(size=(12, 16))).astype(np.float32)
    gf = (centres[rng.integers(0, 8, 50)] + 0.7 * rng.normal(size=(50, 16))).astype(np.float32)
    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 500)  # many blocks in every step
    scores = k_reciprocal_scores(qf, gf, k1=k1, k2=k2, lambda_value=lambda_value)(0, len(qf))
    np.testing.assert_allclose(-scores.numpy(), reference_rerank(qf, gf, k1, k2, lambda_value), atol=1e-5)
    # a block of queries gives the rows of the whole
    part = k_reciprocal_scores(qf, gf, k1=k1, k2=k2, lambda_value=lambda_value)(3, 7)
    np.testing.assert_allclose(part.numpy(), scores[3:7].numpy(), atol=1e-6)


def test_an_image_sharing_the_querys_neighbours_moves_up():
    # The query q (id 1) and its three nearest images n1-n3 (id 1, another camera) sit close
    # together. A (id 1) is nearer to each of n1-n3 than they are to one another, but a little
    # farther from q than B (id 2), whose only near image is q. By cosine B ranks first; with
    # re-ranking A does: its reciprocal neighbours are n1-n3, which are q's too, while B
    # shares only q.
    e = np.eye(8)
    q = unit(e[0])
    n = unit([e[0] + 0.09 * e[1], e[0] + 0.10 * e[2], e[0] + 0.11 * e[3]])
    a = unit(e[0] + 0.095 * (e[1] + e[2] + e[3]))
    b = unit(e[0] + 0.16 * e[4])
    others = unit(np.concatenate([e[5] + 0.1 * np.random.default_rng(0).normal(size=(6, 8)),
                                  e[6] + 0.1 * np.random.default_rng(1).normal(size=(6, 8))]))
    gf = np.concatenate([n, [a, b], others]).astype(np.float32)
    gl = np.array([1, 1, 1, 1, 2] + [3] * 6 + [4] * 6)
    gc = np.array([2, 2, 2, 3, 2] + [1] * 12)
    qf, ql, qc = q[None].astype(np.float32), np.array([1]), np.array([1])
    assert (gf @ q)[4] > (gf @ q)[3]                     # by cosine, B before A
    scores = k_reciprocal_scores(qf, gf, k1=4, k2=1, lambda_value=0.3)(0, 1)[0]
    assert scores[3] > scores[4]                          # re-ranked, A before B
    before = summarize(rank_queries(Side(qf, ql, qc), Side(gf, gl, gc)))
    after = summarize(rank_queries(Side(qf, ql, qc), Side(gf, gl, gc),
                                   score_block=k_reciprocal_scores(qf, gf, k1=4, k2=1, lambda_value=0.3)))
    assert after["mAP"] > before["mAP"] and after["mINP"] == 1.0 > before["mINP"]
