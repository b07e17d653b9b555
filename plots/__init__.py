"""Figures and a summary table for the warmup grid, built from run JSON logs alone.

`analysis` computes (loading, best warmup, colours, summary); `figures` draws;
`python -m plots RUN_DIR [RUN_DIR ...] --out FIG_DIR` runs both.
"""
