"""`python -m pipelines.cli`: the same as the `embedpipe` command."""
import sys

from pipelines.cli import main

sys.exit(main())
