"""Snakemake entry point of the `evaluate` rule; the work is `mona.workflow.evaluate`."""

from mona.workflow import evaluate, main

main(evaluate, snakemake)  # noqa: F821 (injected by Snakemake)
