"""Train the particle detector that prediction.py --find --finder detector uses (FCOS on EfficientNet-Lite0).

Trained on the annotated boxes of the train photos of the photo-grouped split; see --help and docs/find.md.
Example: python find-detector.py --photos MICRO --data processed_MICRO --out results/detector/detector.pt
"""
from microplastics.core.cli import run
from microplastics.find.detector_stage import main

if __name__ == "__main__":
    run(main)
