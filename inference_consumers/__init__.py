"""Inference workers: model engines, admission, token publishing."""
