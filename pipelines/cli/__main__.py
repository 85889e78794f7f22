"""`python -m pipelines.cli`: the same as the `embedpipe` command."""
from pipelines.cli import run

run()
