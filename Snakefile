# MONA reproducibility harness: raw volumes -> preprocess -> split -> train -> evaluate -> tables.
# `snakemake --cores all results/table1.csv` on the embedded synthetic default (config/config.yaml);
# `--configfile config/paper.yaml` for the paper protocol on real data.
from snakemake.utils import min_version

min_version("8.0")


# A --configfile stands alone (config/paper.yaml must not inherit the embedded default's lr or
# MONA's scaled-down view size); --config values still go on top of whichever file is in use.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/ablations.smk"
include: "workflow/rules/table5.smk"
include: "workflow/rules/figures.smk"


# Light steps run where Snakemake runs, not as cluster jobs (a profile's executor applies to
# the rest): aggregation, tables, figures and report pages.
localrules:
    all,
    split,
    seed_scores,
    compare_with_paper,
    table_page,
    provenance,
    dice_vs_ratio,
    paper_vs_reproduced_plot,
    figures,
    report_pages,
    table,
    table5,
    ablation_table,
    ablation_figure,
    ablations,
    share_pretrain,


rule all:
    input:
        expand("results/{table}.csv", table=list(config["tables"])),
        REPORT_TARGETS,
    default_target: True
