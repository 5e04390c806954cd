"""The folders on disk and what a model folder holds: the one place that names them.

Every stage finds its inputs and names its outputs through these names, so a stage that writes
a file and one that reads it cannot drift apart. Standard library only: the data stages, the
report and the deep stages all import it, and it must pull in none of them.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from microplastics.core.errors import InputError

# ---------------------------------------------------------------- default folders
RAW_DIR = "MICRO"                # data-extraction.py writes, data-preprocessing.py reads
DATA_DIR = "processed_MICRO"     # data-preprocessing.py writes, every model stage reads
RESULTS_DIR = "results"          # one sub-folder per model, plus the comparison files

# ---------------------------------------------------------------- a model folder (results/<model>/)
CONFIG_NAME = "config.json"                  # the resolved settings of the run
METRICS_NAME = "metrics.json"                # written last: its presence means the run finished
PREDICTIONS_NAME = "predictions.csv"         # path,true,pred,prob_<class>... on the test split
REPORT_NAME = "classification_report.txt"
CONFUSION_NAME = "confusion_matrix.png"
BEST_NAME = "best.pt"                        # the deep model: a self-describing checkpoint
LAST_NAME = "last.pt"                        # the deep run's state to resume from
CLASSICAL_NAME = "model.skops"               # the classical model: the whole scikit-learn pipeline
LEGACY_CLASSICAL_NAME = "model.joblib"       # found so that loading it can refuse it with the remedy
MODEL_FILES = (BEST_NAME, CLASSICAL_NAME, LEGACY_CLASSICAL_NAME)
HISTORY_NAME = "history.csv"                 # deep models: one row per epoch
CURVES_NAME = "curves.png"
GRID_IMAGE = "predictions_grid.png"          # prediction.py's grid of seeded test crops
GRID_TABLE = "predictions_grid.csv"
GRADCAM_DIR = "gradcam"                      # grad-cam.py's panels
GRADCAM_OWNER = "gradcam.json"               # in GRADCAM_DIR: the model its maps are of, its files, its run
ROBUSTNESS_TABLE = "robustness.csv"          # robustness.py: one row per condition
ROBUSTNESS_PREDICTIONS = "robustness_predictions.csv"
ROBUSTNESS_SUMMARY = "robustness.json"
ROBUSTNESS_PLOT = "robustness.png"
ROBUSTNESS_CLEAN = "none"                    # the corruption column of the clean condition (severity 0)

# ---------------------------------------------------------------- the results folder
IOU_CSV, IOU_MD, IOU_PLOT = "iou.csv", "iou.md", "iou.png"
SUMMARY_CSV, SUMMARY_MD, REPORT_HTML = "summary.csv", "summary.md", "report.html"
SUMMARY_TXT = "summary.txt"                  # the ranking for a terminal, what a pipeline run prints last
VALIDATION_CURVES = "validation_curves.png"  # every deep model's validation curves in one figure


class ModelFolderError(InputError):
    """A model folder that is missing, or holds no model whose training run finished."""


def run_finished(model_dir: str | Path) -> bool:
    """Whether a model folder's training run finished: it writes metrics.json last, after testing.

    A folder with best.pt but no metrics.json is an interrupted run; its best.pt is not the model
    the run would have delivered.
    """
    return (Path(model_dir) / METRICS_NAME).is_file()


def trained_model_file(path: str | Path) -> Path:
    """The model file of a results folder (or the file itself) whose training run finished.

    The one rule of every stage that reads a model folder: it counts as a trained model only
    with its metrics.json (``run_finished``). Anything else is a ModelFolderError that says what
    is missing.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFolderError(f"{path} holds no trained model: there is no such folder; train a model first or "
                               "check --model/--results")
    folder, named = (path.parent, path) if path.is_file() else (path, None)
    found = named or next((folder / f for f in MODEL_FILES if (folder / f).is_file()), None)
    if found is None:
        raise ModelFolderError(f"{path} holds no trained model ({BEST_NAME} or {CLASSICAL_NAME}); train one with "
                               "vgg16.py, resnet50.py, vits.py or ml-baselines.py, or point --model at its folder")
    if not run_finished(folder):
        raise ModelFolderError(f"{folder} holds {found.name} but no {METRICS_NAME}: its training run did not finish, "
                               "so it is not a trained model; continue it with --resume or train it again")
    return found


def model_file(folder: str | Path) -> Path | None:
    """The trained model of a results folder whose run finished (``trained_model_file``), or None."""
    try:
        return trained_model_file(folder)
    except ModelFolderError:
        return None


# ---------------------------------------------------------------- which folders count

@dataclass(frozen=True)
class Requirement:
    """What makes a sub-folder of results/ count as a model folder for one stage."""

    reason: Callable[[Path], str | None]   # why a folder does not count; None when it does
    strict: bool                           # a named folder that does not count is an error (else a note)
    noted: Callable[[Path], bool]          # when scanning: whether a folder left out gets a note
    none_found: str                        # the error when no folder counts ({results} filled in)
    note: str = "{reason}"                 # a note on a folder left out


def _why_not_trained(folder: Path) -> str | None:
    try:
        trained_model_file(folder)
    except ModelFolderError as err:
        return str(err)
    return None


def _holds_model_file(folder: Path) -> bool:
    return any((folder / f).is_file() for f in MODEL_FILES)


# The stages that load a model (robustness.py): a model file and a finished run; an interrupted run
# is noted, a folder without any model file (a cache, an output) passed over in silence.
TRAINED_MODEL = Requirement(
    reason=_why_not_trained, strict=True, noted=_holds_model_file,
    none_found=f"no trained model folder (with {BEST_NAME} or {CLASSICAL_NAME}, and {METRICS_NAME}) in {{results}}; "
               "train a model first", note="skipped {reason}")
# The report: a finished run, model file or not; a named folder that has not finished is left out with a note.
FINISHED_RUN = Requirement(
    reason=lambda folder: None if run_finished(folder) else
    f"{folder.name}: no {METRICS_NAME} in {folder}, left out of the report (its stage has not finished or failed)",
    strict=False, noted=lambda folder: True,
    none_found=f"no <model>/{METRICS_NAME} under {{results}}; run ml-baselines.py or a deep model first")
# ml-IOU.py: the test predictions, which it rescores.
TEST_PREDICTIONS = Requirement(
    reason=lambda folder: None if (folder / PREDICTIONS_NAME).is_file() else f"no {PREDICTIONS_NAME} in {folder}",
    strict=True, noted=lambda folder: False,
    none_found=f"no <model>/{PREDICTIONS_NAME} under {{results}}; run ml-baselines.py or a deep model first")


def find_model_dirs(results: str | Path, wanted: Sequence[str] | None = None, *, require: Requirement,
                    notes: list[str] | None = None, named_paths: bool = False) -> list[Path]:
    """The model folders of ``results`` that meet ``require``: those named in ``wanted``, else every one.

    Named folders are all checked before any work: one that is absent is an error, and so is one
    that does not count when the requirement is strict (else it is left out with a note). When
    scanning, hidden folders (staging, caches) are passed over, and a folder that does not count
    is left out, with a note when the requirement says so. ``notes`` collects the notes;
    ``named_paths``: a name may also be the path of a folder.
    """
    results = Path(results)
    notes = [] if notes is None else notes
    if not results.is_dir() and not (wanted and named_paths):
        raise ModelFolderError(f"results folder {results} does not exist; run a model stage first or pass --results")
    if wanted:
        named = [Path(m) if named_paths and Path(m).is_dir() else results / m for m in dict.fromkeys(wanted)]
        absent = [str(f.name) for f in named if not f.is_dir()]
        if absent and not require.strict:  # a strict requirement names the missing folder itself
            raise ModelFolderError(f"no folder for model(s) {', '.join(absent)} in {results}; "
                                   "train them first or drop them from the command line")
        candidates = named
    else:
        candidates = sorted(d for d in results.iterdir() if d.is_dir() and not d.name.startswith("."))
    found = []
    for folder in candidates:
        reason = require.reason(folder)
        if reason is None:
            found.append(folder)
        elif wanted and require.strict:
            raise ModelFolderError(reason)
        elif wanted or require.noted(folder):
            notes.append(require.note.format(reason=reason))
    if not found:
        raise ModelFolderError(require.none_found.format(results=results))
    return found


def print_notes(notes: Sequence[str], file=sys.stderr) -> None:
    for note in notes:
        print(f"note: {note}", file=file)
