"""Entry point. As PID 1 (the VM's /init): boot, serve, and power off if anything ends it.

A crash prints its traceback to the console and powers the VM off; the agent never
hangs and never returns. Not PID 1 (a host, for tests and debugging): serve on a unix
socket with the paths given as options. Imports at module level only os and sys: every
other import happens when it is needed, because guest boot time is spent here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    if os.getpid() == 1:
        _run_init()  # never returns
    sys.exit(_run_host(sys.argv[1:] if argv is None else argv))


def _run_init() -> None:
    # The guest never speaks TLS; without this asyncio imports ssl and libssl for nothing.
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    try:
        from pykata.agent.config import CONFIG_PATH, AgentConfig, parse_config

        config = AgentConfig()
        if os.path.exists(CONFIG_PATH):
            with open(CONFIG_PATH) as f:
                config = parse_config(f.read())
        from pykata.agent import boot
        from pykata.agent.console import log, mark

        mark("started", "agent started")
        boot.boot(config.modules)
        log("booted: filesystems mounted, modules loaded")
        import asyncio

        from pykata.agent.server import serve_guest

        log("imported the server")

        asyncio.run(serve_guest(config))
        _console("pykata-agent: stopped serving; powering off\n")
    except BaseException:  # PID 1 must report and power off, whatever happened
        _crash()
    from pykata.agent.boot import power_off

    power_off()


def _crash() -> None:
    import traceback

    _console("pykata-agent: crashed:\n" + traceback.format_exc())


def _console(text: str) -> None:
    from pykata.agent.console import write_console

    write_console(text)


def _run_host(argv: Sequence[str]) -> int:
    import argparse
    import asyncio

    from pykata.agent.config import AgentConfig, parse_config
    from pykata.agent.server import serve_host

    p = argparse.ArgumentParser(prog="pykata-agent",
                                description="Serve the pykata agent API on a unix socket.")
    p.add_argument("--listen", required=True, metavar="PATH", help="unix socket to serve on")
    p.add_argument("--config", help="agent.json to start from")
    p.add_argument("--state-dir")
    p.add_argument("--runtime", dest="oci_runtime")
    p.add_argument("--runtime-root")
    p.add_argument("--shared-root")
    args = p.parse_args(list(argv))
    config = AgentConfig()
    if args.config:
        with open(args.config) as f:
            config = parse_config(f.read(), args.config)
    config = config.with_overrides(state_dir=args.state_dir, oci_runtime=args.oci_runtime,
                                   runtime_root=args.runtime_root, shared_root=args.shared_root)
    asyncio.run(serve_host(config, args.listen))
    return 0


if __name__ == "__main__":
    main()
