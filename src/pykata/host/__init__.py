"""Reading host facts (CPU flags, KVM, QEMU binary) and applying host effects."""
