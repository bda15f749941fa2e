"""Evaluation: the evaluator (given a predict function), pixel metrics, FID/KID/LPIPS, plots."""
