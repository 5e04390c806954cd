"""Train and test EfficientNet-Lite0 (ImageNet weights installed with the requirements, no download): backbone
frozen, a new linear head, robust augmentation and crop normalisation.

A preset of the one deep-model engine (microplastics/deep/stage.py); see --help and docs/deep.md.
Example: python efficientnet.py --data processed_MICRO --results results
"""
from microplastics.core.cli import run
from microplastics.deep.stage import main_for

if __name__ == "__main__":
    run(main_for("efficientnet_lite0"))
