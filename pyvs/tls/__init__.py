"""TLS termination and TLS to servers (docs/tls.md).

``certs`` loads and names certificates, ``profiles`` holds the cipher profiles,
``server`` builds a listener's contexts and chooses one by SNI, ``client`` builds the
contexts pyvs uses towards servers (and health checks), ``conn`` carries a client
connection's TLS facts to routing, variables and the SNI/Host rule, ``filters`` holds
the TLS-related filters (HSTS, client-certificate subject, redirect to https) and
``watch`` notices changed certificate files in the supervisor.
"""
