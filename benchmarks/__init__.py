"""Benchmarks: blip2core measured against transformers on the same weights (``python -m benchmarks.run``),
plus the stand-alone scripts described in benchmarks/README.md."""
