"""``pyvs ctl``: the operator's command line for a running pyvs, over its admin API."""
