"""Train and test VGG16 (ImageNet weights): convolutional features frozen, the classifier (fc6, fc7, a new last
layer) trains.

A preset of the one deep-model engine (microplastics/deep/stage.py); see --help and docs/deep.md.
Example: python vgg16.py --data processed_MICRO --results results
"""
from microplastics.core.cli import run
from microplastics.deep.stage import main_for

if __name__ == "__main__":
    run(main_for("vgg16"))
