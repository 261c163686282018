"""`python -m asl_pipeline ...`: the command line in cli.py."""
from asl_pipeline.cli import main

raise SystemExit(main())
