"""Sinks for the monitor (Prometheus, store writer, HTTP shipper, system) and server ingest."""
