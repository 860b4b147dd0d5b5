"""High availability: VRRP (RFC 5798 v3, RFC 3768 v2) floating virtual IPs between nodes.

``packet`` (codec and receive checks) and ``state`` (the transition table) are
sans-I/O; ``io``, ``netlink``, ``tracking``, ``notify`` and ``runner`` are the glue.
"""
