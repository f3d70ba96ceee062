"""Pure decisions: sandbox sizing and QEMU argv. Every host fact arrives as an argument."""
