"""Access logs (ECS JSON lines or combined) and page-view statistics (docs/logging.md).

Nothing here runs on the request path but :meth:`pyvs.logs.access.Observer.ended`,
which only appends a tuple; lines are formatted and written in batches.
"""
