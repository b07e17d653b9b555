"""Synthetic run logs for the plots tests (tests/test_plots.py, tests/test_fair_study.py): the
layout main.py writes (docs/run_log.md), with the losses a test chooses."""

import json
import math
from pathlib import Path

M = 1_000_000


def write_run(directory: Path, param: str, warmup: int, seed: int, final: float,
              status: str = "completed", width: int = 128, lr: float = 1e-3,
              wikitext_offset: float = 0.3, n_evals: int = 5, steps: int | None = None,
              microbatches: int | str | None = None) -> Path:
    """A schema_version 1 run log whose valid loss falls linearly to `final`."""
    curve = []
    for index in range(n_evals):
        loss = final + 0.5 * (n_evals - 1 - index)
        evaluation = {"valid": {"loss": loss, "perplexity": math.exp(loss), "accuracy": 0.3},
                      "wikitext": {"loss": loss + wikitext_offset,
                                   "perplexity": math.exp(loss + wikitext_offset), "accuracy": 0.3}}
        curve.append({"tokens": (index + 1) * 10 * M, "step": index + 1, "train_seconds": 1.0,
                      "lr": {"hidden": lr}, "seq_len": 256, "batch_size": 8, "microbatches": 1,
                      "grad_norm": 1.0, "train_loss": loss, "eval": evaluation})
    name = f"{param}_w{width}_wu{warmup}_lr{lr}_s{seed}" + ("" if microbatches is None else f"_mb{microbatches}")
    content = {
        "schema_version": 1, "run_name": name, "status": status, "command": ["main.py"],
        "config": {"param": param, "width": width, "depth": 4, "warmup_tokens": warmup,
                   "total_tokens": 50 * M, "max_steps": 100, "lr": lr, "seed": seed,
                   "base_width": 64, "n_params": 1000,
                   **({} if microbatches is None else {"microbatches": microbatches})},
        "env": {"torch": "2.13", "device": "cpu", "git_commit": "abc"},
        "eval_sets": ["valid", "wikitext"], "curve": curve, "events": [],
        "summary": {"tokens": curve[-1]["tokens"], "steps": steps or n_evals, "train_seconds": 5.0,
                    "final_eval": curve[-1]["eval"] if status == "completed" else None,
                    "diverged_at": {"step": n_evals, "tokens": curve[-1]["tokens"]}
                    if status == "diverged" else None}}
    path = directory / f"{name}.json"
    path.write_text(json.dumps(content))
    return path
