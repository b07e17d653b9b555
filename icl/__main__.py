"""`python -m icl --help`: train an ensemble of in-context regression transformers (icl/cli.py)."""
from icl.cli import main

raise SystemExit(main())
