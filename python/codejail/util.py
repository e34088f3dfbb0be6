"""Directory helpers, as upstream's ``codejail.util`` (used by ``not_safe_exec``)."""

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def temp_directory():
    """Make a fresh directory named ``codejail-...``, yield its path, remove it after."""
    path = tempfile.mkdtemp(prefix="codejail-")
    try:
        yield path
    finally:
        # A failure to remove it is a real problem: let it raise.
        shutil.rmtree(path)


@contextlib.contextmanager
def change_directory(new_dir):
    """Make ``new_dir`` the current directory for the block, then go back."""
    previous = os.getcwd()
    os.chdir(new_dir)
    try:
        yield new_dir
    finally:
        os.chdir(previous)
