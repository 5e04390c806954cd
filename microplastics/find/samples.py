"""Samples and size classes: what a lab reports, counts per class and per size class per sample.

A sample is a sub-folder of the photos folder (photos lying directly in it form one sample
named after the folder), or what ``--sample-pattern`` (a regular expression) finds in a photo's
name: its first group when it has one, else the whole match. Size classes are by Feret max;
the default edges are the common microplastic reporting bins in micrometres.
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Sequence

import numpy as np
import pandas as pd

from microplastics.core.errors import InputError

DEFAULT_SIZE_EDGES = (100.0, 300.0, 1000.0, 5000.0)
UNMATCHED = "(no sample)"


def compile_pattern(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as err:
        raise InputError(f"--sample-pattern {pattern!r} is not a valid regular expression: {err}") from None


def sample_of(photo: str, root_name: str, pattern: re.Pattern[str] | None = None) -> str:
    """The sample of a photo named relative to the photos folder (forward slashes)."""
    if pattern is not None:
        found = pattern.search(PurePosixPath(photo).name)
        if not found:
            return UNMATCHED
        return found.group(1) if pattern.groups else found.group(0)
    parent = PurePosixPath(photo).parent.as_posix()
    return root_name if parent in ("", ".") else parent


def check_edges(edges: Sequence[float]) -> list[float]:
    values = [float(e) for e in edges]
    if not values or any(not b > a for a, b in zip(values, values[1:])) or values[0] <= 0:
        raise InputError(f"--size-bins must be positive and increasing, got {' '.join(map(str, edges))}")
    return values


def size_labels(edges: Sequence[float], unit: str) -> list[str]:
    """``<100um``, ``100-300um``, ..., ``>5000um`` for edges 100 300 1000 5000."""
    def g(v: float) -> str:
        return f"{v:g}"
    inner = [f"{g(a)}-{g(b)}{unit}" for a, b in zip(edges, edges[1:])]
    return [f"<{g(edges[0])}{unit}", *inner, f">{g(edges[-1])}{unit}"]


def size_class(feret_max: Sequence[float], edges: Sequence[float], unit: str) -> list[str]:
    """The size class of each Feret max (a value on an edge goes to the class above it)."""
    names = size_labels(edges, unit)
    return [names[i] for i in np.searchsorted(np.asarray(edges), np.asarray(feret_max, float), side="right")]


def samples_table(particles: pd.DataFrame, photos: pd.DataFrame, classes: Sequence[str],
                  edges: Sequence[float], unit: str) -> pd.DataFrame:
    """One row per sample: photos, particles, uncertain, then counts per class, per size class,
    and per class and size class. ``photos`` has ``photo,sample`` for every photo processed, so a
    sample whose photos hold no particle still gets its row of zeros."""
    sizes = size_labels(edges, unit)
    rows = []
    for sample, names in photos.groupby("sample", sort=True)["photo"]:
        part = particles[particles["sample"] == sample]
        row = {"sample": sample, "photos": len(names), "particles": len(part),
               "uncertain": int(part["uncertain"].sum()) if len(part) else 0}
        row.update({f"n_{c}": int((part["class"] == c).sum()) for c in classes})
        row.update({f"n_{s}": int((part["size_class"] == s).sum()) for s in sizes})
        row.update({f"n_{c}_{s}": int(((part["class"] == c) & (part["size_class"] == s)).sum())
                    for c in classes for s in sizes})
        rows.append(row)
    return pd.DataFrame(rows)
