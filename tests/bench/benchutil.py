"""What the Python benchmark drivers (scale.py, cross_node.py) share."""
import socket


def free_ports(n):
    """n distinct free ports on 127.0.0.1 (all bound at once so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            sk = socket.socket()
            sk.bind(("127.0.0.1", 0))
            socks.append(sk)
        return [sk.getsockname()[1] for sk in socks]
    finally:
        for sk in socks:
            sk.close()
