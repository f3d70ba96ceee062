"""Value types, the config model and the error hierarchy. Standard library only, no I/O."""
