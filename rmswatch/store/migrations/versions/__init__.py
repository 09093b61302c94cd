"""Alembic revisions; ids are short and fixed ("0001", "0002", ...), never regenerated."""
