"""Retrieval-quality benchmarks (Tatoeba, BUCC 2018 zh-en sample) run through the service's own engine.

Embeddings come from `service.engine.Engine` (ONNX members + fusion), exactly what the service would index,
so a number measured here is a number the service delivers. `python -m benchmarks retrieval --help`.
"""
