"""Grading and evaluation: answer extraction and the DAPO verifier, the rule grader, the benchmarks and their
files, metrics and reports."""
