"""Where files may come from: the media root and the import roots inside it.

Every path a user or a manifest gives is confined: no absolute paths inside a manifest, no ``..``
components, and the resolved path (symlinks followed) must stay inside its root. Directories are
resolved once and cached, so confining 100k files costs one ``lstat`` each, not a full ``realpath``.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class PathError(ValueError):
    """A path that is malformed or escapes its root."""


def media_root() -> Path:
    return Path(os.path.realpath(settings.MEDIA_ROOT))


def import_roots() -> list[Path]:
    """Directories imports may read (default: the media root). Each must lie inside the media root."""
    root = media_root()
    roots = [Path(os.path.realpath(p)) for p in (settings.IMPORT_ROOTS or [root])]
    for item in roots:
        if not item.is_relative_to(root):
            raise ImproperlyConfigured(f"IMPORT_ROOTS entry {item} is not inside MEDIA_ROOT {root}.")
    return roots


def check_relative(relative: str) -> PurePosixPath:
    """Lexical checks on a relative path from a manifest."""
    if not relative or "\x00" in relative or "\\" in relative:
        raise PathError("empty path or forbidden character")
    pure = PurePosixPath(relative)
    if pure.is_absolute():
        raise PathError("absolute paths are not allowed; give a path relative to the dataset directory")
    if any(part == ".." for part in pure.parts):
        raise PathError("'..' is not allowed in paths")
    return pure


def media_file(relative: str) -> Path:
    """A stored path relative to the media root, resolved (symlinks followed) and confined to it."""
    check_relative(relative)
    root = media_root()
    path = Path(os.path.realpath(root / relative))
    if not path.is_relative_to(root):
        raise PathError("the path escapes the media root")
    return path


def resolve_source(source: str) -> Path:
    """Resolve a user-given import source (absolute, or relative to the media root) inside an import root."""
    if not source or "\x00" in source:
        raise PathError("empty source")
    candidate = Path(source)
    if not candidate.is_absolute():
        check_relative(source)
        candidate = media_root() / candidate
    resolved = Path(os.path.realpath(candidate))
    if not any(resolved.is_relative_to(root) for root in import_roots()):
        raise PathError("the source is outside the allowed import roots")
    try:
        resolved.stat()
    except FileNotFoundError:
        raise PathError("the source does not exist") from None
    except OSError as exc:  # name too long, a symlink loop, no permission
        raise PathError(f"the source cannot be read ({exc.strerror})") from None
    return resolved


class Confiner:
    """Resolves manifest paths under one base directory, refusing anything that escapes it."""

    def __init__(self, base: Path):
        self.base = Path(os.path.realpath(base))
        self.media = media_root()
        self._dirs: dict[str, bool] = {}

    def _dir_inside(self, directory: str) -> bool:
        inside = self._dirs.get(directory)
        if inside is None:
            inside = Path(os.path.realpath(directory)).is_relative_to(self.base)
            self._dirs[directory] = inside
        return inside

    def resolve(self, relative: str) -> tuple[str, os.stat_result]:
        """Return (absolute path, stat) of a regular file inside the base, or raise PathError."""
        pure = check_relative(relative)
        absolute = os.path.join(self.base, *pure.parts)
        if not self._dir_inside(os.path.dirname(absolute)):
            raise PathError("the path escapes the dataset directory (symlinked directory)")
        try:
            st = os.lstat(absolute)
        except FileNotFoundError:
            raise PathError("file not found") from None
        except OSError as exc:  # name too long, not a directory on the way
            raise PathError(f"unreadable path ({exc.strerror})") from None
        if os.path.islink(absolute):
            target = os.path.realpath(absolute)
            if not Path(target).is_relative_to(self.base):
                raise PathError("the path escapes the dataset directory (symlink)")
            try:
                st = os.stat(target)
            except OSError as exc:  # a dangling link or a symlink loop
                raise PathError(f"unreadable symlink ({exc.strerror})") from None
        import stat as stat_module

        if not stat_module.S_ISREG(st.st_mode):
            raise PathError("not a regular file")
        return absolute, st

    def media_relative(self, absolute: str) -> str:
        return os.path.relpath(absolute, self.media)
