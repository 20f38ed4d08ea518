"""bench/speed/cluster_speed.py: its synthetic people are grouped back as drawn, by the exact search and by
faiss's, each size in a process of its own."""
import pytest

from bench.speed import cluster_speed


def test_people_drawn_apart_are_grouped_back_by_both_searches(capsys):
    pytest.importorskip("faiss")
    cluster_speed.main(["--sizes", "2000", "--exact_up_to", "2000", "--noise", "0.5"])
    table = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| 2,000")]
    assert [row[1].strip() for row in table] == ["exact", "faiss IVF"]
    for row in table:
        purity, coverage = float(row[7]), float(row[8])
        assert purity > 0.95 and coverage > 0.9
