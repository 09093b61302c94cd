"""Pure view functions: DataFrames in, DataFrames, numbers and Plotly figures out (no I/O)."""
