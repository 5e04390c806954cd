"""Classify microplastic crops with a trained model, deep (best.pt) or classical (model.skops).

Grid mode draws seeded test crops with true and predicted labels into results/<model>/predictions_grid.png;
--input classifies crop images into a CSV; --photos classifies every annotated particle of a MICRO-style
folder or YOLO export and scores it when labelled; --photos DIR --find finds, measures, counts and
classifies the particles of photos nobody annotated (docs/find.md). See --help and docs/explain-predict.md.
Example: python prediction.py --models vgg16 resnet50 vit_b_16 rf svm
"""
from microplastics.core.cli import run
from microplastics.predict.prediction import main

if __name__ == "__main__":
    run(main)
