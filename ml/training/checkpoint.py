"""Checkpoints and saved models that load with ``torch.load(weights_only=True)`` (no pickle of objects).

Everything written here is tensors, numbers, strings, lists, tuples and dicts, so loading never runs code
from the file. RNG states (Python, NumPy, torch CPU and CUDA) are converted to tensors/lists. Files are
written to a temporary name and renamed, so a killed process never leaves a half-written checkpoint.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.atomic import atomic_write_file
from ml.detectors import Detector, create

FORMAT = "forgerylab-detector/1"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": [int(version), [int(x) for x in internal], gauss],
        "numpy": {
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": int(np_state["pos"])},
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through a unique temp file in the same directory + fsync + ``os.replace``.

    On any error (a full or read-only disk included) the temp file is removed and the previous file, if
    any, is left untouched, so a resumed run never loads a truncated checkpoint.
    """
    return atomic_write_file(path, lambda handle: torch.save(obj, handle))


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a file written by this module; ``weights_only=True`` so no object is ever unpickled."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def _plain(value: Any) -> Any:
    """Config values as plain JSON-like types (tuples become lists) so weights_only loading accepts them."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    raise TypeError(f"detector config value {value!r} is not a plain type")


def save_detector(
    detector: Detector, path: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> Path:
    """Write name + config + weights (+ plain metadata such as the validation threshold)."""
    state = {k: v.detach().cpu() for k, v in detector.state_dict().items()}
    return atomic_save(
        {
            "format": FORMAT,
            "name": detector.name,
            "config": _plain(detector.config),
            "state_dict": state,
            "metadata": _plain(metadata or {}),
        },
        path,
    )


class CheckpointError(ValueError):
    """A file that is not a loadable detector checkpoint: not a torch file, a pickle carrying objects
    (refused by ``weights_only``, never executed), or a config / weights the detector does not accept."""


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for line in text.splitlines():  # torch's weights_only refusal: keep the line that names the global
        if "WeightsUnpickler error:" in line:
            return "a pickle with objects (refused, never executed): " + line.split("error:", 1)[1].strip()
    return f"{exc.__class__.__name__}: {text.splitlines()[0] if text else ''}"[:300]


def saved_config(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the values of keys added after it was written (``Detector.saved_defaults``)."""
    from ml.detectors.base import registered_class

    return {**getattr(registered_class(name), "saved_defaults", {}), **config}


def load_detector(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[Detector, dict]:
    """Rebuild a detector saved by ``save_detector``; returns (detector in eval mode, metadata).

    Raises ``CheckpointError`` for anything else (a missing file stays ``FileNotFoundError``)."""
    name = Path(path).name
    try:
        blob = load(path, map_location)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{name} is not a loadable detector checkpoint: {_reason(exc)}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(
            f"{name} is not a loadable detector checkpoint: not a saved detector ({FORMAT})"
        )
    try:
        detector = create(blob["name"], **saved_config(blob["name"], blob["config"]))
        detector.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{name} is not a loadable detector checkpoint: {_reason(exc)}") from None
    detector.eval()
    return detector, dict(blob.get("metadata", {}))
