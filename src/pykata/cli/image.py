"""`pykata image build|info`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pykata.domain.errors import ImageError
from pykata.host.config_files import load_config
from pykata.image.builder import BuildOptions, build_image, format_info, read_manifest


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    root = Path(cfg.image.dir)
    if args.image_command == "build":
        extra = {"compression": args.compression} if args.compression else {}
        opts = BuildOptions(dir=root, oci_runtime=args.oci_runtime, **extra)
        manifest = build_image(opts, lambda line: print(f"  {line}", file=sys.stderr),
                               force=args.force)
        print(format_info(manifest))
        return 0
    found = read_manifest(root)
    if found is None:
        raise ImageError(f"no guest image in {root}/image: run `pykata image build`")
    print(found.to_json() if args.json else format_info(found))
    return 0
