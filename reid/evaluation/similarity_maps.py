"""Why two images match: where on each image the cosine similarity of their descriptors comes from.

In eval mode a descriptor is affine in the network's last feature map, up to its normalisations.
Average pooling is the mean over the map's P positions, and the bottleneck's Linear and
BatchNorm (its running statistics) fold into one affine map y = A z + e. So the bottleneck
output of an image is a sum over positions,

    y = sum_p y_p,    y_p = (A F_p + e) / P        (F_p: the 2048-d feature at position p),

the constant shared evenly among the positions. With d = y / |y| the descriptor of one pass,

    cos(image 1, image 2) = d1 . d2 = sum_p (y1_p . d2) / |y1|,

a map over image 1's positions that sums to the score exactly, and one over image 2's alike.
test.py's descriptor adds the flip's: d = u / |u|, u = y / |y| + y' / |y'|; the flip's positions,
mirrored back, add their share at the same place of the image. A map is as fine as the feature
map: 8 x 4 at 256 x 128, 2 x 1 at 64 x 32 (twice that with train_new.py --stride 1).
"""
import torch


def feature_map(net, images):
    """The last feature map (N x 2048 x h x w) of ResNet-50 (model.ft_net) for a batch of images."""
    m = net.model
    x = m.maxpool(m.relu(m.bn1(m.conv1(images))))
    return m.layer4(m.layer3(m.layer2(m.layer1(x))))


def folded_bottleneck(net):
    """(A, e) of the bottleneck in eval mode: BatchNorm1d(Linear(z)) = A z + e, in float64."""
    linear, norm = net.classifier.add_block
    scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    a = scale[:, None] * linear.weight.double()
    e = scale * (linear.bias.double() - norm.running_mean.double()) + norm.bias.double()
    return a, e


def position_terms(net, images):
    """y_p of each image: N x h x w x 512, in float64; they sum over positions to the bottleneck output."""
    a, e = folded_bottleneck(net)
    f = feature_map(net, images).double()
    positions = f.shape[2] * f.shape[3]
    return (torch.einsum("nchw,dc->nhwd", f, a) + e) / positions


@torch.no_grad()
def similarity_maps(net, image_a, image_b, flip=True):
    """(map over image a, map over image b, their cosine similarity): each map (h x w, float64)
    sums to the cosine of the two images' descriptors as test.py computes them (with flip=True:
    image and flip; model.Descriptor). The network must be in eval mode (running statistics)."""
    if net.training:
        raise ValueError("similarity_maps needs the network in eval mode: BatchNorm's running statistics")
    images = torch.stack([image_a, image_b])

    def normalised(terms):  # each image's terms scaled to sum to a unit vector, y_p / |y|
        return terms / terms.sum((1, 2)).norm(dim=1)[:, None, None, None]

    shares = normalised(position_terms(net, images))
    if flip:
        # the flip's position (h, w) shows the image's (h, W - 1 - w): mirrored back to add up in place
        shares = shares + normalised(position_terms(net, images.flip(3)).flip(2))
    # each image's shares now sum to u (or d), whose norm makes the descriptor
    total = shares.sum((1, 2))
    norms = total.norm(dim=1)
    descriptors = total / norms[:, None]
    map_a = shares[0] @ descriptors[1] / norms[0]
    map_b = shares[1] @ descriptors[0] / norms[1]
    return map_a, map_b, float(descriptors[0] @ descriptors[1])
