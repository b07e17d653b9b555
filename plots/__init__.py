"""Figures and a summary table for the warmup grid, built from run JSON logs alone.

`analysis` computes (loading, best warmup, colours, summary); `figures` draws;
`python -m plots RUN_DIR [RUN_DIR ...] --out FIG_DIR` runs both. `fair_study` builds the fair
µP-against-SP study's own tables and figures on them (`python -m plots.fair_study runs --out DIR`);
`lr_optimum` is the one rule for a loss-against-lr curve's optimum (this study and the in-context one).
"""
