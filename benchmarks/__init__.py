"""The benchmarks (pytest-benchmark): a package, so that the files import their helpers from ``benchmarks.common``."""
