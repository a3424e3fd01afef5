"""The files that cross between the trusted grader and a grading kernel, in one place.

``<dir>/inputs/<id>.pkl``
    Written by the trusted ``oracle.prepare``, read by the kernel: the *payload* of one
    exercise (case arguments, output names, how to call the answer). It holds no seed and no
    expected value.
``<dir>/outputs/<id>.npz`` and ``<dir>/outputs/<id>.json``
    Written by the kernel, read by the trusted ``oracle.verdict``: what the answer returned
    (float64 arrays only, loaded with ``allow_pickle=False``) and the *record* (status, error
    text, timings) as JSON. The trusted side never unpickles anything the kernel wrote, and
    it refuses links, special files and files above a size cap.

Array names in the ``.npz``: ``case<k>/<output>`` for the drawn cases and ``cost/<output>``
for the large input of a cost check.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1
MAX_JSON_BYTES = 1 << 20  # 1 MiB
MAX_NPZ_BYTES = 256 << 20  # 256 MiB uncompressed
_KEY = re.compile(r"^(case\d+|cost)/[A-Za-z_][A-Za-z0-9_]*$")
_ID = re.compile(r"^\d+\.\d+$")


class RecordError(Exception):
    """A grading file is missing or unreadable; the message is written for the gradebook."""


def _checked_id(exercise: str) -> str:
    if not isinstance(exercise, str) or not _ID.match(exercise):
        raise ValueError(f"an exercise id looks like '4.2', got {exercise!r}")
    return exercise


def inputs_path(folder: str | os.PathLike, exercise: str) -> Path:
    return Path(folder) / "inputs" / f"{_checked_id(exercise)}.pkl"


def outputs_paths(folder: str | os.PathLike, exercise: str) -> tuple[Path, Path]:
    folder = Path(folder) / "outputs"
    name = _checked_id(exercise)  # "5.4": with_suffix would make it "5.npz"
    return folder / f"{name}.npz", folder / f"{name}.json"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- trusted -> kernel


def write_inputs(folder: str | os.PathLike, exercise: str, payload: dict) -> Path:
    """Trusted side: store one exercise's payload for the kernel."""
    path = inputs_path(folder, exercise)
    _write_atomic(path, pickle.dumps(payload, protocol=4))
    return path


def read_inputs(folder: str | os.PathLike, exercise: str) -> dict:
    """Kernel side: the payload the grader prepared (a file only the grader writes)."""
    path = inputs_path(folder, exercise)
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except FileNotFoundError:
        raise RecordError(
            f"Exercise {exercise}: the grader prepared no inputs for this check ({path.name} "
            "is missing). Tell your instructor; nothing is wrong with your answer."
        ) from None


# --------------------------------------------------------------------------- kernel -> trusted


def write_outputs(
    folder: str | os.PathLike, exercise: str, arrays: dict[str, np.ndarray], record: dict
) -> None:
    """Kernel side: the answer's outputs as data (float64 arrays) and the record as JSON."""
    npz, js = outputs_paths(folder, exercise)
    clean = {}
    for key, value in arrays.items():
        if not _KEY.match(key):
            raise ValueError(f"bad array name {key!r}")
        # np.array, not ascontiguousarray: that one turns a 0-d result into shape (1,)
        clean[key] = np.array(value, dtype=np.float64, order="C")
    import io

    buf = io.BytesIO()
    np.savez(buf, **clean)
    _write_atomic(npz, buf.getvalue())
    _write_atomic(js, json.dumps(record, allow_nan=False).encode())


def _open_regular(path: Path, cap: int) -> bytes:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise RecordError("missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise RecordError("not a regular file")
    if st.st_size > cap:
        raise RecordError(f"larger than {cap} bytes")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise RecordError(f"larger than {cap} bytes")
    return data


def read_outputs(folder: str | os.PathLike, exercise: str) -> tuple[dict[str, np.ndarray], dict]:
    """Trusted side: the kernel's arrays and record, read as data; :class:`RecordError` if
    they are missing or malformed (links, special files, oversize, pickles, bad JSON)."""
    npz, js = outputs_paths(folder, exercise)
    try:
        raw = _open_regular(js, MAX_JSON_BYTES)
    except RecordError as exc:
        raise RecordError(f"no readable record ({exc})") from None
    try:
        record = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise RecordError("the record is not valid JSON") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise RecordError("the record has an unknown format")
    try:
        blob = _open_regular(npz, MAX_NPZ_BYTES)
    except RecordError as exc:
        raise RecordError(f"no readable arrays ({exc})") from None
    import io

    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            total = sum(info.file_size for info in zf.infolist())
            if total > MAX_NPZ_BYTES:
                raise RecordError("the arrays are too large")
        arrays = {}
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            for key in data.files:
                if not _KEY.match(key):
                    continue
                value = data[key]
                if value.dtype != np.float64:
                    continue
                arrays[key] = np.array(value, dtype=np.float64)
    except RecordError:
        raise
    except Exception as exc:  # a zip bomb, a pickle, a truncated file: all "unreadable"
        raise RecordError(f"the arrays are unreadable ({type(exc).__name__})") from None
    return arrays, record


def jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars and tuples turned into JSON types (NaN/inf as strings)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if np.isfinite(v) else str(v)
    if value is None or isinstance(value, str):
        return value
    return str(value)
