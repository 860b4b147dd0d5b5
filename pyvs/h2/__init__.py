"""HTTP/2 on the client side of http listeners (docs/http2.md).

``settings`` holds only the configuration model (imported by the config schema);
the engine (``conn``, ``stream``, ``detect``) imports the ``h2`` library and is
loaded by a worker only for a listener that serves HTTP/2.
"""
