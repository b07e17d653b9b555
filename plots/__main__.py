"""python -m plots RUN_DIR [RUN_DIR ...] --out FIG_DIR [--format png|pdf] [--eval-set NAME]"""

import argparse
import sys
from pathlib import Path

from plots import analysis, figures
from runlog import RunLogError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m plots",
        description="Draw the warmup-grid figures and summary.md from run JSON logs.")
    parser.add_argument("run_dirs", nargs="+", type=Path, help="folders holding run JSON logs")
    parser.add_argument("--out", type=Path, required=True, help="folder for the figures")
    parser.add_argument("--format", choices=("png", "pdf"), default="png", help="default: png")
    parser.add_argument("--eval-set", action="append", dest="eval_sets", metavar="NAME",
                        help="eval set to draw (repeatable; default: every set the runs logged)")
    args = parser.parse_args(argv)

    missing = [str(directory) for directory in args.run_dirs if not directory.is_dir()]
    if missing:
        parser.error(f"not a folder: {', '.join(missing)}")
    try:
        runs = analysis.load_run_logs(args.run_dirs)
    except RunLogError as error:
        parser.error(str(error))
    if not runs:
        folders = ", ".join(map(str, args.run_dirs))
        parser.error(f"no run logs (JSON with schema_version) in {folders}")
    logged_sets = analysis.eval_sets_of(runs)
    eval_sets = args.eval_sets or logged_sets
    unknown = [name for name in eval_sets if name not in logged_sets]
    if unknown:
        parser.error(f"eval set(s) {', '.join(unknown)} not in the runs "
                     f"(they logged {', '.join(logged_sets)})")

    written = figures.make_figures(runs, args.out, eval_sets, args.format)
    print(f"{len(runs)} runs -> {len(written)} files in {args.out}")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
