"""A trained model folder as the stages that run its model read it: its settings, its recorded test
predictions, the processed data it was trained on, and that data's crops.

Which files a model folder holds, and when it counts as trained, is core.layout's; this module reads
them. Torch-free: it loads no model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from microplastics.core import fileio
from microplastics.core.errors import InputError
from microplastics.core.images import ImageReadError, read_rgb
from microplastics.core.layout import CONFIG_NAME, DATA_DIR, PREDICTIONS_NAME, ModelFolderError
from microplastics.data.dataset import check_data_dir, recorded_input
from microplastics.results.metrics import read_predictions


def model_config(model_dir: str | Path) -> dict[str, Any]:
    """The model folder's config.json (empty when there is none)."""
    return fileio.read_json_dict(Path(model_dir) / CONFIG_NAME, "retrain the model or pass --data")


def resolve_data_dir(model_dir: str | Path, data: str | Path | None = None, recorded: str | None = None) -> Path:
    """``data`` when given, else the processed folder the model was trained on (its config.json,
    else ``recorded``, e.g. the config stored in the checkpoint)."""
    if data is not None:
        return check_data_dir(data, "--data")
    recorded = model_config(model_dir).get("data") or recorded
    if not recorded:
        raise ModelFolderError(f"{model_dir}/{CONFIG_NAME} does not name the data folder; pass --data {DATA_DIR}")
    folder = Path(recorded)
    if not folder.is_dir():
        raise ModelFolderError(f"the data folder {folder} recorded in {model_dir}/{CONFIG_NAME} is gone; pass --data")
    return folder


def recorded_predictions(model_dir: str | Path) -> pd.DataFrame:
    """The model folder's predictions.csv on the test split."""
    path = Path(model_dir) / PREDICTIONS_NAME
    if not path.is_file():
        raise ModelFolderError(f"{path} not found; the model's training script writes it after testing")
    frame = read_predictions(path)
    if frame.empty:
        raise ModelFolderError(f"{path} has no rows")
    return frame


def read_crop(data_dir: Path, rel: str) -> np.ndarray:
    """One crop of the processed folder, as RGB."""
    try:
        return read_rgb(data_dir / rel)
    except ImageReadError as err:
        raise InputError(f"{err}; pass --data with the processed folder the model was tested on") from None


def default_margin(model_dir: Path) -> float:
    """The crop margin data-preprocessing.py used for the model's training data (0 if unknown)."""
    data = model_config(model_dir).get("data")
    return recorded_input(Path(data))[1] if data and Path(data).is_dir() else 0.0
