"""Snakemake entry point of the `plateau` rule; the work is `mona.workflow.plateau`."""

from mona.workflow import main, plateau

main(plateau, snakemake)  # noqa: F821 (injected by Snakemake)
