"""Snakemake entry point of the `synthesize` rule; the work is `mona.workflow.synthesize`."""

from mona.workflow import main, synthesize

main(synthesize, snakemake)  # noqa: F821 (injected by Snakemake)
