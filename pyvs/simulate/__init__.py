"""``pyvs simulate``: the real schedulers against a synthetic workload, in simulated time."""
