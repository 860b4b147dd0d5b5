"""pyvs: Python Virtual Server -- L4/L7 load balancing, reverse proxy and VRRP in one program."""

__version__ = "0.1.0"
