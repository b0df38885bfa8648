"""The one exception type for bad user input, and the one path that turns faults into it.

Anything the user can fix (a wrong name, a missing folder, a bad size) raises
`GenError` with a message that names the value and says what to do. The CLI prints
it as one line and exits with status 2; Python callers can catch it.

`user_error(err)` is the CLI's single translation of the faults a user's environment or
files cause, rather than gen's code: a file that cannot be read or written (OSError), an
optional package that is not installed, a corrupt file (`reading(path)` marks where one
is read), memory that runs out. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import json
from contextlib import contextmanager
from pathlib import Path


class GenError(ValueError):
    """Bad input from the user: the message names the value and the fix."""


# import name -> (pip package, the gen extra that installs it or None)
OPTIONAL_PACKAGES = {
    "av": ("av", "video"),
    "pytorch_fid": ("pytorch-fid", "metrics"),
    "scipy": ("scipy", "metrics"),
    "sklearn": ("scikit-learn", "digits"),
    "transformers": ("transformers", "sd"),
    "yaml": ("pyyaml", None),
    "lpips": ("lpips", None),
    "torch_fidelity": ("torch-fidelity", None),
    "tensorboard": ("tensorboard", None),
    "datasets": ("datasets", "hf"),
    "peft": ("peft", "lora"),
}


def missing_package(name: str, needed_for: str = "") -> GenError:
    """The one line for an optional package that is not installed."""
    top = name.split(".")[0]
    package, extra = OPTIONAL_PACKAGES.get(top, (top, None))
    how = f'pip install "gen[{extra}]" (or pip install {package})' if extra else f"pip install {package}"
    return GenError(f"{needed_for or 'this'} needs the Python package {package!r}, which is not installed: {how}")


def _corrupt_types() -> tuple[type, ...]:
    """Exceptions that mean "this file's content is not what it should be"."""
    import tomllib
    import zipfile

    types: list[type] = [json.JSONDecodeError, UnicodeDecodeError, tomllib.TOMLDecodeError, zipfile.BadZipFile,
                         EOFError, KeyError, TypeError, ValueError, RuntimeError]
    try:
        from safetensors import SafetensorError

        types.append(SafetensorError)
    except ImportError:  # pragma: no cover - safetensors is a dependency
        pass
    try:
        import yaml

        types.append(yaml.YAMLError)
    except ImportError:
        pass
    return tuple(types)


@contextmanager
def reading(path, what: str = "", fix: str = ""):
    """Inside the block a file is parsed: a parse failure becomes one GenError naming it.

        with reading(path, "--config"):
            data = json.loads(Path(path).read_text())
    """
    try:
        yield
    except GenError:
        raise
    except OSError as err:
        raise GenError(f"{what + ' ' if what else ''}{path}: cannot read it ({_os_reason(err)})") from None
    except _corrupt_types() as err:
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        hint = f"; {fix}" if fix else ""
        raise GenError(f"{what + ' ' if what else ''}{path} is corrupt or not the expected kind of file "
                       f"({type(err).__name__}: {detail}){hint}") from None


def _os_reason(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return "the disk is full"
    return err.strerror or type(err).__name__


def user_error(err: BaseException) -> GenError | None:
    """The GenError a fault from the user's environment stands for, or None for a bug."""
    if isinstance(err, GenError):
        return err
    if isinstance(err, ModuleNotFoundError) and err.name and err.name.split(".")[0] in OPTIONAL_PACKAGES:
        return missing_package(err.name)
    if isinstance(err, OSError) and not isinstance(err, (ModuleNotFoundError,)):
        where = err.filename
        if getattr(err, "filename2", None):
            where = f"{err.filename} -> {err.filename2}"
        if where is None:
            return None  # no file named: not an input problem we can describe
        if isinstance(err, IsADirectoryError):
            reason = "it is a folder, not a file"
        elif isinstance(err, NotADirectoryError):
            reason = "a part of the path is a file, not a folder"
        elif isinstance(err, FileExistsError):
            reason = "it already exists"
        else:
            reason = _os_reason(err)
        return GenError(f"cannot use {where}: {reason}")
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return GenError("ran out of memory; use a smaller --batch, --n, --size or --frames")
    return None


def read_json(path, what: str = "", fix: str = ""):
    """A JSON file's content, or one GenError naming the file."""
    with reading(path, what, fix):
        return json.loads(Path(path).read_text(encoding="utf-8"))
