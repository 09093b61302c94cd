"""Generated artefacts: Grafana dashboards, Prometheus rules and the metrics reference page.

Each generator reads the metric catalogue and the specs and writes files that are checked in
(`make docs`); nothing in the package imports a generator, only `rmswatch.cli` and
`python -m rmswatch.generators.<name>`.
"""
