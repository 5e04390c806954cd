"""Per-class label IoU (Jaccard of the labels, not box IoU) of every model in results/.

Run with --help for the options; the logic lives in microplastics/classical/iou.py.
"""
from microplastics.core.cli import run
from microplastics.classical.iou import main

if __name__ == "__main__":
    run(main)
