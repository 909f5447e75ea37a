# MONA's ablations: results/table2.csv, results/table3.csv (+ .md) and results/figures/fig7-9
# (.png, .pdf, .csv), from the config's `ablations` section. Each entry is an ordinary run of a
# `mona~key=value` variant that the train and evaluate rules build. A variant that differs from
# another only in fine-tuning settings (MONA's `finetune_only` keys) copies that run's
# pre-training instead of repeating it: stage 1 never reads those keys, so the copy holds the
# same weights a repeated run would (same seed, same stage-1 settings).
_ablation_problems = ablation.config_problems(config)
if _ablation_problems:
    sys.exit("error: problems in the config:\n" + "\n".join(f"  - {m}" for m in _ablation_problems))

ABLATION_TABLES = [name for name in ablation.TABLES if name in ablation.section(config)]
ABLATION_FIGURES = [name for name in ablation.FIGURES if name in ablation.section(config)]


ruleorder: share_pretrain > train
ruleorder: ablation_table > table


rule share_pretrain:
    input:
        lambda w: ablation.shared_pretrain_models(
            config, METHODS, RUN, w.dataset, w.method, w.ratio
        ),
    output:
        seed_paths("pretrain/model.pt"),
    wildcard_constraints:
        method=ablation.shared_pretrain_regex(METHODS),
    log:
        "runs/{dataset}/{method}/r{ratio}/pretrain.share.log",
    benchmark:
        "runs/{dataset}/{method}/r{ratio}/pretrain.share.benchmark.tsv"
    run:
        ablation.share_pretrain(list(input), list(output), log[0])


rule ablation_table:
    input:
        lambda w: ablation.metrics_paths(config, w.ablation_table, RUN, run_ratio),
    output:
        csv="results/{ablation_table}.csv",
        md="results/{ablation_table}.md",
    wildcard_constraints:
        ablation_table="|".join(ABLATION_TABLES) or "(?!)",
    log:
        "logs/ablations/{ablation_table}.log",
    run:
        from mona.workflow import main

        args = (wildcards.ablation_table, config, list(input), output.csv, output.md)
        main(lambda _: ablation.write_table(*args), SimpleNamespace(log=log))


rule ablation_figure:
    input:
        lambda w: ablation.metrics_paths(config, w.ablation_figure, RUN, run_ratio),
    output:
        png=report(
            "results/figures/{ablation_figure}.png",
            caption="../report/ablation_figure.rst",
            category="Figures",
            subcategory="Ablations",
        ),
        pdf="results/figures/{ablation_figure}.pdf",
        csv="results/figures/{ablation_figure}.csv",
    wildcard_constraints:
        ablation_figure="|".join(ABLATION_FIGURES) or "(?!)",
    log:
        "logs/ablations/{ablation_figure}.log",
    run:
        from mona.workflow import main

        args = (wildcards.ablation_figure, config, list(input), *output)
        main(lambda _: ablation.write_figure(*args), SimpleNamespace(log=log))


rule ablations:
    input:
        [f"results/{name}.{ext}" for name in ABLATION_TABLES for ext in ("csv", "md")],
        [f"results/figures/{name}.{ext}" for name in ABLATION_FIGURES for ext in ("png", "pdf")],
