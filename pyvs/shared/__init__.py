"""State every worker of one instance shares: counts, stick tables, rate limits.

See :mod:`pyvs.shared.zone` (the memory and its two implementations) and
:mod:`pyvs.shared.state` (what lives where, and the handles the data path uses).
"""
