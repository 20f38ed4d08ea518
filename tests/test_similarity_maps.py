"""Why two images match: each image's map sums to the cosine similarity of the two descriptors
test.py computes, exactly (up to float rounding), with and without the flip."""
import re

import pytest
import torch

from model import Descriptor, build_model
from reid.evaluation.similarity_maps import similarity_maps


def network(stride=2):
    torch.manual_seed(0)
    net = build_model({"nclasses": 5, "stride": stride})
    norm = net.classifier.add_block[1]  # running statistics other than the defaults, so that they count
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.5, 2.0)
    norm.bias.data.normal_()
    return net.eval()


@pytest.mark.parametrize("size, stride, flip, cells", [((64, 32), 2, True, (2, 1)), ((64, 32), 1, True, (4, 2)),
                                                       ((128, 64), 2, False, (4, 2))])
def test_each_map_sums_to_the_descriptors_cosine(size, stride, flip, cells):
    net = network(stride)
    a, b = torch.randn(2, 3, *size)
    map_a, map_b, cosine = similarity_maps(net, a, b, flip=flip)
    assert tuple(map_a.shape) == tuple(map_b.shape) == cells
    with torch.no_grad():
        da, db = Descriptor(net, flip=flip)(torch.stack([a, b]))
    assert cosine == pytest.approx(float(da @ db), abs=1e-5)
    assert float(map_a.sum()) == pytest.approx(cosine, abs=1e-10)
    assert float(map_b.sum()) == pytest.approx(cosine, abs=1e-10)
    assert not torch.allclose(map_a, map_a.mean())  # the positions differ: the map says where


def test_a_network_in_training_mode_is_refused():
    net = network().train()
    with pytest.raises(ValueError, match="eval mode"):
        similarity_maps(net, torch.randn(3, 64, 32), torch.randn(3, 64, 32))


def test_demo_draws_why_a_query_and_its_first_match_match(tiny_run, prepared_market, tmp_path, monkeypatch, capsys):
    import demo
    from reid.cli import UserError

    monkeypatch.chdir(tiny_run)
    args = ["--test_dir", str(prepared_market), "--query_index", "2", "--output", str(tmp_path / "show.png")]
    demo.main(args + ["--why", str(tmp_path / "why.png"), "--name", "tiny"])
    said = capsys.readouterr().out.splitlines()[-1]
    cosine, query_sum, match_sum = map(float, re.findall(r"-?\d+\.\d+", said.split(": ", 1)[1]))
    assert query_sum == pytest.approx(cosine, abs=1e-4) and match_sum == pytest.approx(cosine, abs=1e-4)
    assert (tmp_path / "why.png").stat().st_size > 0
    with pytest.raises(UserError, match="--why needs --name"):
        demo.main(args + ["--why", str(tmp_path / "again.png")])
    assert not (tmp_path / "again.png").exists()
