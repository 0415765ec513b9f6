"""Benchmarks: `python -m bench` (fastnet vs PyTorch vs NumPy), pytest-benchmark micro-benchmarks."""
