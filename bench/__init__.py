"""Benchmarks (speed/: how fast, against a plain baseline in the same run) and experiments
(experiments/: what a method or setting reaches), with what they share (stages.py)."""
