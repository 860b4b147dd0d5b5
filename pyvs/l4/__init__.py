"""Layer 4: TCP and UDP balancing in user space, and kernel data planes (nftables, IPVS).

See docs/layer4.md for when to use which. Modules: ``tcp`` / ``udp`` (the user-space
proxies), ``pump`` (moving bytes, copy or splice), ``reactor`` (the worker's
edge-triggered epoll), ``proxyproto`` (PROXY protocol codec, sans I/O),
``admission`` (server choice under maxconn), ``runtime`` (what a worker holds),
``nftables`` / ``ipvs`` / ``kernel`` (the kernel data planes, owned by the supervisor).
"""
