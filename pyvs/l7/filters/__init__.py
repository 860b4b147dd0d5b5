"""L7 filters: one module per feature, each a :class:`pyvs.l7.filters.base.Filter`."""
