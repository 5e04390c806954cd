"""Explanations: the Grad-CAM and token-map library (cam), the grad-cam.py stage (grad_cam), and
the localisation scores of the maps."""
