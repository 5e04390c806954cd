"""Train and test ResNet50 (ImageNet weights): backbone frozen, head Linear(2048,512)-ReLU-Dropout(0.4)-Linear, SMOTE.

A preset of the one deep-model engine (microplastics/deep/stage.py); see --help and docs/deep.md.
Example: python resnet50.py --data processed_MICRO --results results
"""
from microplastics.core.cli import run
from microplastics.deep.stage import main_for

if __name__ == "__main__":
    run(main_for("resnet50"))
