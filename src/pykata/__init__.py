"""pykata: OCI containers in lightweight QEMU virtual machines.

Kept import-free: the guest agent ships this package's agent, protocol and domain parts
into the VM, and every import here would cost guest boot time.
"""

__version__ = "0.1.0"
