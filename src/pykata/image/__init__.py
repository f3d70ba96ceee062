"""The guest image builder: kernel + initramfs assembled from Debian packages."""
