"""Alembic migrations of the run store (run by `rmswatch.store.engine.upgrade`)."""
