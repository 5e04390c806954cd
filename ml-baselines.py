"""Handcrafted features -> Random Forest and SVM, scored on the test split (results/rf, results/svm).

Run with --help for the options; the logic lives in microplastics/classical/baselines.py.
"""
from microplastics.core.cli import run
from microplastics.classical.baselines import main

if __name__ == "__main__":
    run(main)
