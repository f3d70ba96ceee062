"""The guest image builder: kernel + initramfs assembled from Debian packages.

Public API lives in `pykata.image.builder` (BuildOptions, build_image, read_manifest,
image_paths, format_info, Manifest, ImagePaths).
"""
