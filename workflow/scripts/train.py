"""Snakemake entry point of the `train` rule; the work is `mona.workflow.train`."""

from mona.workflow import main, train

main(train, snakemake)  # noqa: F821 (injected by Snakemake)
