"""Compare every model in results/: the study's table with 95% bootstrap intervals, pairwise
McNemar tests, and one HTML page with the data summary and every figure the stages wrote.

    python report.py --results results --data processed_MICRO

Writes results/summary.csv, results/summary.md and results/report.html.
"""
from microplastics.core.cli import run
from microplastics.results.report import main

if __name__ == "__main__":
    run(main)
