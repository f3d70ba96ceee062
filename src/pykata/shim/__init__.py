"""containerd shim v2 (the containerd issue builds it here)."""
