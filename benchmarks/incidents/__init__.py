"""A labelled corpus of real RMSProp trainings (incidents and healthy runs) and the benchmark
that runs it through the real evaluator: `python -m benchmarks.incidents.bench`."""
