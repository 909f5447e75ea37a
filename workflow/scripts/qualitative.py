"""Snakemake entry point of the `qualitative_figure` rule; the work is `write_qualitative`."""

from pathlib import Path

import torch

from mona.report.figures import qualitative_plans, write_qualitative
from mona.workflow import main


def qualitative(smk) -> None:
    torch.set_num_threads(max(1, smk.threads))
    write_qualitative(
        smk.config,
        qualitative_plans(smk.config)[smk.wildcards.figure],
        Path(smk.input.manifest).parent,
        smk.input.split,
        list(smk.input.models),
        list(smk.input.metrics),
        smk.output.png,
        smk.output.pdf,
    )


main(qualitative, snakemake)  # noqa: F821 (injected by Snakemake)
