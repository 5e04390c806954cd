"""Running trained models of either family on new crops and photos: the predictor library,
prediction.py, and the robustness stage."""
