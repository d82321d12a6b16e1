"""Evaluation: how well a model names people, and the unknown threshold's calibration.

Closed set (`closed_set`), open set (`open_set`), LFW-style pairs (`verification`), the report
(`report`), all of it run on a model directory (`run`); the stranger cohort (`cohort`) and the
FPIR calibration on it (`calibration`).
"""

__all__: list[str] = []  # the modules are imported by name; nothing is re-exported here
