"""The paper's objective, pinned: identity loss + alpha x verification loss, computed by hand on a
tiny batch for both ways of forming pairs, and a network that learns one small batch by heart."""
import pytest
import torch

from model import DIFFERENT, SAME, Verification, build_model, in_batch_pairs, objective, verif_net

# 4 identities x 2 images, tiny images: ResNet-50 runs on them in milliseconds
LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
SIZE = (3, 32, 16)


def networks(seed=0):
    torch.manual_seed(seed)
    return build_model({"nclasses": 4}), verif_net()


def cross_entropy(scores, target):
    """-log softmax(scores)[target], averaged over the rows, in float64."""
    s = scores.double()
    return (torch.logsumexp(s, 1) - s[torch.arange(len(s)), target]).mean()


def by_hand(model, verif, anchor, label, positive, negative, alpha):
    """The loss as the paper writes it, from the networks' weights, without objective() or Verification."""
    logits, f = model(anchor)
    f_pos, f_neg = model(positive)[1], model(negative)[1]
    linear = verif.classifier[1]  # Linear(512, 2) after the dropout
    pos_score = (f * f_pos) @ linear.weight.T + linear.bias
    neg_score = (f * f_neg) @ linear.weight.T + linear.bias
    n = len(label)
    loss_id = cross_entropy(logits, label)
    loss_verif = alpha * 0.5 * (cross_entropy(pos_score, torch.full((n,), SAME))
                                + cross_entropy(neg_score, torch.full((n,), DIFFERENT)))
    return loss_id, loss_verif


@pytest.mark.parametrize("alpha", [1.0, 0.37])
def test_objective_with_triplet_loading(alpha):
    model, verif = networks()
    model.eval(), verif.eval()  # no dropout: the hand computation sees the same network
    images = torch.randn(len(LABELS), *SIZE, generator=torch.Generator().manual_seed(1))
    positive = images[[1, 0, 3, 2, 5, 4, 7, 6]]  # the other image of each identity
    negative = images[[2, 4, 6, 0, 1, 3, 5, 7]]  # an image of another identity
    with torch.no_grad():
        loss_id, loss_verif = objective(*Verification(model, verif)((images, LABELS, positive, negative)), alpha)
        want_id, want_verif = by_hand(model, verif, images, LABELS, positive, negative, alpha)
    torch.testing.assert_close(loss_id.double(), want_id, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss_verif.double(), want_verif, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 2.5])
def test_objective_with_pairs_inside_a_pk_batch(alpha):
    model, verif = networks()
    model.eval(), verif.eval()
    images = torch.randn(len(LABELS), *SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.manual_seed(5)
        loss_id, loss_verif = objective(*Verification(model, verif)((images, LABELS)), alpha)
        torch.manual_seed(5)  # the same draw of pairs as inside Verification
        positive, negative = in_batch_pairs(LABELS)
        assert (LABELS[positive] == LABELS).all() and (positive != torch.arange(len(LABELS))).all()
        assert (LABELS[negative] != LABELS).all()
        want_id, want_verif = by_hand(model, verif, images, LABELS, images[positive], images[negative], alpha)
    torch.testing.assert_close(loss_id.double(), want_id, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss_verif.double(), want_verif, rtol=1e-5, atol=1e-6)


def test_alpha_weighs_the_verification_loss_only():
    logits, pos_score, neg_score = torch.randn(8, 4), torch.randn(8, 2), torch.randn(8, 2)
    id_1, verif_1 = objective(logits, LABELS, pos_score, neg_score, 1.0)
    id_3, verif_3 = objective(logits, LABELS, pos_score, neg_score, 3.0)
    assert id_1 == id_3 and torch.isclose(verif_3, 3 * verif_1)
    # a head sure of the right answer has no verification loss; sure of the wrong one, a large one
    sure = torch.tensor([[0.0, 0.0]]).repeat(8, 1)
    sure[:, SAME], sure[:, DIFFERENT] = 20.0, -20.0
    assert objective(logits, LABELS, sure, -sure, 1.0)[1] < 1e-6
    assert objective(logits, LABELS, -sure, sure, 1.0)[1] > 10


def test_label_smoothing_mixes_the_identity_target_with_a_uniform_one_and_leaves_verification_alone():
    logits, pos_score, neg_score = torch.randn(8, 4), torch.randn(8, 2), torch.randn(8, 2)
    plain_id, plain_verif = objective(logits, LABELS, pos_score, neg_score, 1.0)
    smooth_id, smooth_verif = objective(logits, LABELS, pos_score, neg_score, 1.0, label_smoothing=0.1)
    # by hand: 0.9 x the usual cross-entropy + 0.1 x the mean of -log p over the 4 identities
    log_p = torch.log_softmax(logits.double(), 1)
    want = 0.9 * cross_entropy(logits, LABELS) + 0.1 * (-log_p.mean(1)).mean()
    torch.testing.assert_close(smooth_id.double(), want, rtol=1e-5, atol=1e-6)
    assert not torch.isclose(smooth_id, plain_id)
    assert torch.equal(smooth_verif, plain_verif)


@pytest.mark.parametrize("sampler", ["triplet", "pk"])
def test_a_small_batch_is_learnt_by_heart(sampler):
    """Trained on one batch, both parts of the loss fall: the identity loss from log 4 to nearly 0,
    the verification loss (slower: see below) from log 2 = 0.693 to below 0.67."""
    model, verif = networks()
    net = Verification(model, verif)
    generator = torch.Generator().manual_seed(3)
    looks = torch.randn(4, *SIZE, generator=generator)  # each identity has its own look, seen with noise
    images = looks[LABELS] + 0.3 * torch.randn(len(LABELS), *SIZE, generator=generator)
    if sampler == "triplet":
        batch = (images, LABELS, images[[1, 0, 3, 2, 5, 4, 7, 6]], images[[2, 4, 6, 0, 1, 3, 5, 7]])
    else:
        batch = (images, LABELS)
    # The head scores a weighted cosine, f . (w * f'), and w must grow to tens before its answers are
    # confident: with the network's step it would need thousands of steps, so it gets a larger one.
    # The network's lr is 0.02: at 0.05 the triplet case's identity loss swung between 0.4 and 1.5 for
    # 160 steps on an AVX2-only CPU (float rounding differs between CPUs) and ended above 0.1; at 0.02
    # it falls steadily, below 0.001 by step 10, and the verification loss to 0.57 (triplet) and 0.53
    # (pk) by step 40 on an AVX2-only CPU, still falling (0.36 and 0.31 by step 100).
    optimizer = torch.optim.SGD([{"params": model.parameters(), "lr": 0.02}, {"params": verif.parameters(), "lr": 2.0}],
                                momentum=0.9)
    net.train()
    for _ in range(40):
        loss_id, loss_verif = objective(*net(batch), alpha=1.0)
        optimizer.zero_grad()
        (loss_id + loss_verif).backward()
        optimizer.step()
    for m in net.modules():  # the batch as it was learnt (BatchNorm on its statistics), without dropout
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    with torch.no_grad():
        loss_id, loss_verif = objective(*net(batch), alpha=1.0)
    assert loss_id < 0.1 and loss_verif < 0.67, (float(loss_id), float(loss_verif))
