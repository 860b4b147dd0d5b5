"""Session persistence: stick tables, cookie persistence, and the stores that share
them (memory in the supervisor by default, Redis across nodes).

Map: :mod:`~pyvs.persist.table` (the sans-I/O stick table and its keys),
:mod:`~pyvs.persist.cookie` (cookie codec), :mod:`~pyvs.persist.policy`
(the worker side the L7 exchange calls), :mod:`~pyvs.persist.hub` (the supervisor
side), :mod:`~pyvs.persist.store` and :mod:`~pyvs.persist.redis_store` (sharing).
User guide: docs/sessions.md.
"""
