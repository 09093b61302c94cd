"""The run store: SQLAlchemy models, engine setup, migrations and the query module."""
