"""Train and test ViT-B/16 (ImageNet weights): encoder frozen, a new linear head, SMOTE; results/vit_b_16/.

A preset of the one deep-model engine (microplastics/deep/stage.py); see --help and docs/deep.md.
Example: python vits.py --data processed_MICRO --results results
"""
from microplastics.core.cli import run
from microplastics.deep.stage import main_for

if __name__ == "__main__":
    run(main_for("vit_b_16"))
