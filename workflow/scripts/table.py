"""Snakemake entry point of the `table` rule; the work is `mona.workflow.aggregate`."""

from mona.workflow import aggregate, main

main(aggregate, snakemake)  # noqa: F821 (injected by Snakemake)
