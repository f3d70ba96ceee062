"""The port-forward redirect in a pod's network namespace on the host, as nft text.

containerd's CRI PortForward enters the pod's namespace on the host and dials
localhost:<port> there (127.0.0.1 first, then ::1). With the pod's workload in a VM,
nothing listens in that namespace, so every TCP connection to loopback there is redirected
to the one port the shim listens on; the shim reads the port that was dialled from the
connection (SO_ORIGINAL_DST) and carries the stream to localhost:<port> in the guest.
"""

from __future__ import annotations

TABLE = "pykata_portforward"


def port_redirect_ruleset(listen_port: int, ipv6: bool) -> str:
    """Adds the table (replacing one an earlier sandbox in this namespace left)."""
    if not 0 < listen_port < 65536:
        raise ValueError(f"listen port {listen_port}: must be 1-65535")
    rules = [f"ip daddr 127.0.0.1 meta l4proto tcp redirect to :{listen_port}"]
    if ipv6:
        rules.append(f"ip6 daddr ::1 meta l4proto tcp redirect to :{listen_port}")
    body = "\n".join(f"    {r}" for r in rules)
    return (f"table inet {TABLE}\ndelete table inet {TABLE}\n"
            f"table inet {TABLE} {{\n  chain output {{\n"
            f"    type nat hook output priority -100; policy accept;\n{body}\n  }}\n}}\n")


def port_redirect_removal() -> str:
    return f"delete table inet {TABLE}\n"
