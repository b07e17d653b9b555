"""In-context linear regression: a second study for the µP / warmup toolkit.

Small transformers learn linear regression in context (Garg et al. 2022; the developmental-landscape
setting of Hoogland et al. and the affine setting of the µP-transfer seed). Run as `python -m icl ...`.

Modules: tasks (samplers, token layout), model (functional pre-LN transformer on stacked ensemble
weights), baselines (zero, least squares, ridge, dMMSE), schedules, train (ensemble trainer, CUDA graph),
bench (steps/s). llc and stages hold the local learning coefficient estimator.
"""
