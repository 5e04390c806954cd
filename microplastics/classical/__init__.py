"""The classical family: handcrafted features, Random Forest and SVM pipelines (ml-baselines.py),
and the box-overlap study (ml-IOU.py)."""
