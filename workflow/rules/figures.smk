# Figures and the pages of `snakemake --report results/report.html`. Every input here is a run
# the tables already need (model.pt, metrics.json) or a file made from them, so a figure is
# redrawn from existing runs and never trains anything new.
RESULT_TABLES = [
    *config["tables"],
    *ABLATION_TABLES,
    *(["table5"] if table5.section(config) else []),
]


rule seed_scores:
    input:
        all_table_metrics,
    output:
        "results/seed_scores.csv",
    log:
        "logs/report/seed_scores.log",
    run:
        from mona.report.compare import write_seed_scores

        logged(log, write_seed_scores, config, list(input), output[0])


rule compare_with_paper:
    input:
        unpack(comparison_inputs),
    output:
        csv=report(
            "results/paper_vs_reproduced.csv",
            caption="../report/paper_vs_reproduced_csv.rst",
            category="Data files",
        ),
        html=report(
            "results/report/paper_vs_reproduced.html",
            caption="../report/paper_vs_reproduced.rst",
            category="Tables",
        ),
    log:
        "logs/report/compare_with_paper.log",
    run:
        from mona.report.compare import write_comparison

        extra = {name: list(input[name]) for name in input.keys() if name != "seeds"}
        logged(log, write_comparison, config, input.seeds, output.csv, output.html, extra)


rule class_table:
    input:
        table_metrics,
    output:
        csv="results/{table}.classes.csv",
        html=report(
            "results/report/{table}_classes.html",
            caption="../report/classes.rst",
            category="Tables",
        ),
    log:
        "logs/report/{table}_classes.log",
    run:
        from mona.report.details import write_class_table

        logged(
            log, write_class_table, wildcards.table, list(input), config, output.csv, output.html
        )


rule training_curves:
    input:
        table_metrics,
    output:
        png=report(
            "results/figures/curves/{table}/{dataset}.png",
            caption="../report/curves.rst",
            category="Figures",
        ),
        pdf="results/figures/curves/{table}/{dataset}.pdf",
    log:
        "logs/report/curves_{table}_{dataset}.log",
    run:
        from mona.report.details import write_curves

        logged(
            log,
            write_curves,
            wildcards.table,
            list(input),
            config,
            wildcards.dataset,
            output.png,
            output.pdf,
        )


rule table_page:
    input:
        "results/{page}.csv",
    output:
        report("results/report/{page}.html", caption="../report/table.rst", category="Tables"),
    wildcard_constraints:
        page="|".join(map(re.escape, RESULT_TABLES)),
    log:
        "logs/report/{page}_page.log",
    run:
        from mona.report.compare import write_table_page

        logged(log, write_table_page, wildcards.page, input[0], output[0])


rule provenance:
    input:
        all_run_metrics,
    output:
        csv=report("results/runs.csv", caption="../report/runs_csv.rst", category="Data files"),
        runs=report(
            "results/report/runs.html", caption="../report/runs.rst", category="Provenance"
        ),
        runtimes=report(
            "results/report/runtimes.html",
            caption="../report/runtimes.rst",
            category="Provenance",
        ),
        protocol=report(
            "results/report/protocol.html",
            caption="../report/protocol.rst",
            category="Provenance",
        ),
    log:
        "logs/report/provenance.log",
    run:
        from mona.report.compare import write_provenance

        logged(
            log,
            write_provenance,
            config,
            list(input),
            output.csv,
            output.runs,
            output.runtimes,
            output.protocol,
        )


rule dice_vs_ratio:
    input:
        seeds="results/seed_scores.csv",
    output:
        png=report(
            "results/figures/dice_vs_ratio.png",
            caption="../report/dice_vs_ratio.rst",
            category="Figures",
            subcategory="Results",
        ),
        pdf="results/figures/dice_vs_ratio.pdf",
    log:
        "logs/figures/dice_vs_ratio.log",
    run:
        from mona.report.figures import write_result_plots

        logged(
            log,
            write_result_plots,
            config,
            input.seeds,
            dice_png=output.png,
            dice_pdf=output.pdf,
        )


rule paper_vs_reproduced_plot:
    input:
        seeds="results/seed_scores.csv",
    output:
        png=report(
            "results/figures/paper_vs_reproduced.png",
            caption="../report/paper_vs_reproduced_plot.rst",
            category="Figures",
            subcategory="Results",
        ),
        pdf="results/figures/paper_vs_reproduced.pdf",
    log:
        "logs/figures/paper_vs_reproduced.log",
    run:
        from mona.report.figures import write_result_plots

        logged(
            log,
            write_result_plots,
            config,
            input.seeds,
            scatter_png=output.png,
            scatter_pdf=output.pdf,
        )


rule qualitative_figure:
    input:
        unpack(qualitative_runs),
    output:
        png=report(
            "results/figures/{figure}.png",
            caption="../report/qualitative.rst",
            category="Figures",
            subcategory="Qualitative",
        ),
        pdf="results/figures/{figure}.pdf",
    wildcard_constraints:
        figure="|".join(map(re.escape, QUALITATIVE)) or "(?!)",
    params:
        # what the caption (workflow/report/qualitative.rst) says
        dataset=lambda w: dataset_label(config, QUALITATIVE[w.figure].dataset),
        ratio=lambda w: QUALITATIVE[w.figure].ratio,
        seed=lambda w: QUALITATIVE[w.figure].seed,
        methods=lambda w: display_names(config, QUALITATIVE[w.figure].methods),
        missing=lambda w: display_names(config, QUALITATIVE[w.figure].missing),
        fallback=lambda w: QUALITATIVE[w.figure].fallback,
    log:
        "logs/figures/{figure}.log",
    threads: 1
    conda:
        "../envs/mona.yaml"
    script:
        "../scripts/qualitative.py"


# Everything the report shows; `rule all` lists it so that `snakemake --report` finds it.
FIGURE_TARGETS = [
    *(f"results/figures/{name}.{ext}" for name in QUALITATIVE for ext in ("png", "pdf")),
    *(
        f"results/figures/{name}.{ext}"
        for name in ("dice_vs_ratio", "paper_vs_reproduced")
        for ext in ("png", "pdf")
    ),
]
ABLATION_FIGURE_TARGETS = [
    f"results/figures/{name}.{ext}" for name in ABLATION_FIGURES for ext in ("png", "pdf", "csv")
]
REPORT_TARGETS = [
    *FIGURE_TARGETS,
    *ABLATION_FIGURE_TARGETS,
    *(f"results/{table}.{ext}" for table in RESULT_TABLES for ext in ("csv", "md")),
    *(f"results/report/{table}.html" for table in RESULT_TABLES),
    "results/report/paper_vs_reproduced.html",
    "results/report/runs.html",
    *(f"results/report/{table}_classes.html" for table in config["tables"]),
    *(
        f"results/figures/curves/{table}/{dataset}.png"
        for table, spec in config["tables"].items()
        for dataset in spec["datasets"]
    ),
]


rule figures:
    input:
        FIGURE_TARGETS,


rule report_pages:
    input:
        REPORT_TARGETS,
