"""``deployctl``: the operator's command line."""
