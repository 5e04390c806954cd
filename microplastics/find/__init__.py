"""Photos nobody annotated: the classical particle finder, measurements in micrometres, per-sample
counts and the sample report (prediction.py --find)."""
