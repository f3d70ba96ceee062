"""Write docs/configuration.md and src/pykata/domain/defaults.toml from the config model.

    python scripts/gen-config-docs.py          # rewrite both files
    python scripts/gen-config-docs.py --check  # exit 1 when either is stale

tests/unit/test_config_docs.py runs the same comparison as --check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pykata.domain.config_docs import render_defaults_toml, render_markdown

ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = {
    ROOT / "docs" / "configuration.md": render_markdown,
    ROOT / "src" / "pykata" / "domain" / "defaults.toml": render_defaults_toml,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report stale files")
    args = ap.parse_args()
    stale = []
    for path, render in OUTPUTS.items():
        text = render()
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path.relative_to(ROOT)}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
