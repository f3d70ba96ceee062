"""`containerd-shim-pykata-v2`: the binary containerd runs for runtime io.containerd.pykata.v2.

Imports stay minimal until the action is known: containerd waits on `start` and `delete`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pykata
from pykata.domain.errors import PykataError, UsageError
from pykata.shim.args import parse_args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        if args.version:
            print(f"containerd-shim-pykata-v2 (pykata {pykata.__version__})")
            return 0
        from pykata.shim import bootstrap

        if args.action == "start":
            return bootstrap.start(args, sys.stdin.buffer, sys.stdout.buffer)
        return bootstrap.delete(args, sys.stdout.buffer)
    except UsageError as exc:
        print(f"containerd-shim-pykata-v2: {exc}", file=sys.stderr)
        return 2
    except (PykataError, OSError, ValueError) as exc:
        print(f"containerd-shim-pykata-v2: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
