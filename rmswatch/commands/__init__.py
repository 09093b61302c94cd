"""The `rmswatch` subcommands that are not a server: each module is one command's work.

`rmswatch.cli` parses the arguments and imports only the module of the command that runs, so
`rmswatch rules` never pays for pandas, SQLAlchemy or Dash. Commands print; domain modules don't.
"""
