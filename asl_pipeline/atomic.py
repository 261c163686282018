"""Atomic writes: outputs appear complete or not at all, so a failed stage keeps the previous ones.

Temporaries are hidden siblings: `.NAME.tmp-*`, and `.NAME.old-*` for a directory being replaced. An
exception, Ctrl-C or SIGTERM (see errors.py) removes them on the way out; a process killed outright
(SIGKILL) cannot, so the next write of the same directory removes what it left and, if it was killed
between the two renames, first puts the previous output back.
"""
import contextlib
import glob
import json
import os
import secrets
import shutil
from pathlib import Path

from asl_pipeline.errors import PipelineError


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _recover_killed_write(final: Path) -> None:
    # One writer per output at a time (DVC locks the repository), so any temporary of `final` is stale.
    pattern = f".{glob.escape(final.name)}"
    backups = sorted(final.parent.glob(pattern + ".old-*"))
    if backups and not final.exists():
        os.replace(backups.pop(), final)
    for leftover in backups + sorted(final.parent.glob(pattern + ".tmp-*")):
        _remove(leftover)


def remove_temporaries(folder: Path) -> list:
    """Remove the temporaries that writes killed outright (SIGKILL) left in `folder`; the paths removed.

    For a folder whose files are written under names never used twice (teach mode's photos), where no later
    write of the same output would find them; only for a writer that knows no write of its own is under way.
    """
    stale = sorted(path for path in Path(folder).glob(".*.tmp-*") if path.is_file())
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_dir(final: Path):
    """Yield an empty temporary sibling of `final`; on success it replaces `final`, on error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _recover_killed_write(final)
    tmp = final.parent / f".{final.name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()  # mode 0777 less the umask, as the directory it replaces; mkdtemp would leave it 0700
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Two renames, not one: os.replace cannot replace a non-empty directory.
    backup = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        os.replace(final, backup)
    os.replace(tmp, final)
    shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: Path):
    """Yield a temporary sibling path of `final` to write; on success it is renamed onto `final`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{secrets.token_hex(4)}{final.suffix}"
    # Made as open() makes files, mode 0666 less the umask (0644 usually): the output is read like any other
    # file, not 0600 as mkstemp would leave it. O_EXCL: a new file, never one already there.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


@contextlib.contextmanager
def atomic_files(*finals):
    """Temporary siblings of several outputs, renamed into place together only when the block succeeds.

    A stage's outputs belong together (a model and its class names): none is replaced unless all are done.
    """
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_file(final)) for final in finals]


def read_json(path: Path, stage: str):
    """A JSON file an earlier stage wrote; missing or damaged, the error says which stage to re-run."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError) as error:
        raise PipelineError(f"{path} is missing or damaged ({error}): run `dvc repro {stage}`") from None


def write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
