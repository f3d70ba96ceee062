"""Read and write containerd's configuration files for `pykata install containerd`.

The thin side of pykata.plan.containerd_config, which decides every byte written and which
files containerd reads. A write
goes to a temporary file beside the target (a name containerd's `*.toml` imports skip),
is fsynced and renamed over it, keeping the mode and owner of the file it replaces and
writing through a symbolic link rather than over it. Before the main config changes, its
old text is kept beside it (`config.toml.pykata-bak`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile

from pykata.domain.errors import InstallError

BACKUP_SUFFIX = ".pykata-bak"


def read_text(path: str) -> str | None:
    """The file's text, None when there is none."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InstallError(path, exc.strerror or str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise InstallError(path, f"not UTF-8: {exc}") from exc


def glob_files(pattern: str) -> list[str]:
    """The paths matching `pattern`, sorted, dot files included (as Go's filepath.Glob)."""
    return sorted(glob.glob(pattern, include_hidden=True))


def write_atomic(path: str, text: str, like: str | None = None) -> None:
    """Replace `path` with `text`; mode and owner from `like` when it exists, else 0644."""
    target = os.path.realpath(path)
    try:
        st = os.stat(like) if like and os.path.exists(like) else None
        directory = os.path.dirname(target)
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp",
                                   dir=directory)
    except OSError as exc:
        raise InstallError(path, exc.strerror or str(exc)) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            os.fchmod(f.fileno(), st.st_mode & 0o7777 if st else 0o644)
            if st and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise InstallError(path, exc.strerror or str(exc)) from exc
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def apply_install(dropin: str, dropin_text: str, main: str, main_before: str | None,
                  main_text: str | None) -> tuple[bool, bool]:
    """Write the drop-in, then the main config (`main_text` None: leave it), keeping the
    main config's old text in `<main>.pykata-bak`. The drop-in goes first: one nothing
    imports yet is harmless. Whether each was written; a file already as planned is not."""
    wrote_dropin = read_text(dropin) != dropin_text
    if wrote_dropin:
        write_atomic(dropin, dropin_text)
    if main_text is None:
        return wrote_dropin, False
    if read_text(main) != main_before:
        raise InstallError(main, "changed while pykata was reading it: run it again")
    if main_before is not None:
        write_atomic(main + BACKUP_SUFFIX, main_before, like=main)
    write_atomic(main, main_text, like=main)
    return wrote_dropin, True
