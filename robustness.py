"""Score trained models on the test split under imaging corruptions.

Blur, darker and brighter light, a colour-temperature shift, sensor noise, heavy JPEG, low
resolution and contrast loss, each at three severities, applied to whole photos before
cropping when the photos can be found (to the stored crops otherwise). Writes
robustness.csv, robustness_predictions.csv, robustness.json and robustness.png into each
model folder. Run with --help for the options; docs/robustness.md explains the suite.
"""
from microplastics.core.cli import run
from microplastics.predict.robustness import main

if __name__ == "__main__":
    run(main)
