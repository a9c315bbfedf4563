"""Benchmarks of the sim engine; see docs/benchmarks.md. Run from the repository root."""
