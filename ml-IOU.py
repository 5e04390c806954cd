"""Per-class label IoU (Jaccard of the labels, not box IoU) of every model in results/.

Run with --help for the options; the logic lives in microplastics/iou.py.
"""
from microplastics.cli import run
from microplastics.iou import main

if __name__ == "__main__":
    run(main)
