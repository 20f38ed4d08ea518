"""Speed benchmarks: each prints its figures and, where there is one, the ratio against a plain
baseline measured in the same run."""
