"""Snakemake entry point of the `preprocess` rule; the work is `mona.workflow.preprocess`."""

from mona.workflow import main, preprocess

main(preprocess, snakemake)  # noqa: F821 (injected by Snakemake)
