"""Snakemake entry point of the `split` rule; the work is `mona.workflow.split`."""

from mona.workflow import main, split

main(split, snakemake)  # noqa: F821 (injected by Snakemake)
