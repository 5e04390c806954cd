"""Scores and reports: metrics, intervals, the caveats a table needs, prediction grids, and
report.py's summary and HTML page. Imports no deep-model module."""
