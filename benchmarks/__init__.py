"""Benchmarks of drex-opt on real PufferLib training; run each as ``python -m benchmarks.<name>``."""
