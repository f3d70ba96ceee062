"""The QEMU and virtiofsd processes and the QMP client."""
