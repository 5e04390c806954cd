"""Heat maps (Grad-CAM, Grad-CAM++, EigenCAM; attention rollout for ViTs) of a trained deep model on test crops.

Writes one panel per chosen crop and an overview into results/<arch>/gradcam/. See --help and
docs/explain-predict.md.
Example: python grad-cam.py --model results/vgg16 --per-class 4 --method gradcam gradcam++
"""
from microplastics.core.cli import run
from microplastics.explain.grad_cam import main

if __name__ == "__main__":
    run(main)
