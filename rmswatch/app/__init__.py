"""The Dash app: executive, on-call, debug, SLO and postmortem pages over the store."""
