# Config validation and the path functions every rule uses. No training logic lives here.
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

from mona.config import (
    check_config,
    coerce_command_line,
    ratio_names,
    run_method_problems,
    run_ratio as config_run_ratio,
    split_variant,
    step_settings,
    validate_schema,
)
from mona.errors import DataError
from mona.registry import load_methods


# `--config` hands nested values over as strings; give them the types the schema asks for
config.update(coerce_command_line(config))
_config_problems = []
for _check in (validate_schema, check_config):  # every error at once, one line each
    try:
        _check(config)
    except DataError as error:
        _config_problems += error.messages
    except Exception:
        if not _config_problems:  # the semantic checks may trip over what the schema refused
            raise
_config_problems = list(dict.fromkeys(_config_problems))
if _config_problems:
    sys.exit("error: problems in the config:\n" + "\n".join(f"  - {m}" for m in _config_problems))

METHODS = load_methods(tuple(config.get("plugins", [])))
RUN = "runs/{dataset}/{method}/r{ratio}/s{seed}"


wildcard_constraints:
    dataset="[A-Za-z0-9_-]+",
    method="[A-Za-z0-9_.=+~-]+",
    ratio=r"\d+(\.\d+)?|all",
    seed=r"\d+",
    stage="[a-z_]+",
    table="|".join(config["tables"]),


def raw_input(wildcards):
    """The raw folder: generated for synthetic datasets, the user's path otherwise."""
    dataset = config["datasets"][wildcards.dataset]
    if dataset["raw"] == "synthetic":
        return f"data/raw/synthetic/{wildcards.dataset}"
    return dataset["raw"]


def method_class(run_method):
    """The registered class of a run's method (`name` or `name~key=value+...`).

    A run name asked for directly (a target path) is checked like the config's: an unknown
    method or hyperparameter, or a value of the wrong type, stops the planning.
    """
    problems = run_method_problems(METHODS, run_method)
    if problems:
        raise ValueError("; ".join(problems))
    return METHODS[split_variant(run_method)[0]]


def run_ratio(dataset, method, ratio):
    """The ratio folder of a table cell's runs: methods that label every training patient
    train once for all ratios, and ratios that label the same patients share one run."""
    method_class(method)  # an unknown method or variant stops the planning here
    return config_run_ratio(config, dataset, method, ratio)


def seed_paths(suffix):
    """One path `RUN/suffix` per configured seed; the other wildcards are left to the rule."""
    escaped = suffix.replace("{", "{{").replace("}", "}}")
    pattern = f"runs/{{{{dataset}}}}/{{{{method}}}}/r{{{{ratio}}}}/s{{seed}}/{escaped}"
    return expand(pattern, seed=config["seeds"])


def _seeds_of(wildcards, suffix):
    values = dict(wildcards.items())
    return [f"{RUN.format(**values, seed=seed)}/{suffix}" for seed in config["seeds"]]


RATIO_NAMES = ratio_names(config)


def check_ratio(wildcards):
    """A run folder `r{ratio}` must be one the config plans (`r10`, not `r10.0` or `r999`)."""
    if wildcards.ratio not in RATIO_NAMES:
        raise ValueError(
            f"ratio folder r{wildcards.ratio} is not one this config plans "
            f"(r{', r'.join(RATIO_NAMES)}); add the ratio to `ratios:` to train it"
        )


def train_inputs(wildcards):
    check_ratio(wildcards)
    inputs = {
        "manifest": f"data/processed/{wildcards.dataset}/manifest.json",
        "split": f"data/splits/{wildcards.dataset}/split.json",
    }
    stages = method_class(wildcards.method).stages
    index = stages.index(wildcards.stage)
    if index > 0:
        inputs["previous"] = _seeds_of(wildcards, f"{stages[index - 1]}/model.pt")
    return inputs


def final_models(wildcards):
    check_ratio(wildcards)
    stage = method_class(wildcards.method).stages[-1]
    return _seeds_of(wildcards, f"{stage}/model.pt")


def table_metrics(wildcards):
    spec = config["tables"][wildcards.table]
    return sorted(
        {
            os.path.join(
                RUN.format(
                    dataset=dataset,
                    method=method,
                    ratio=run_ratio(dataset, method, ratio),
                    seed=seed,
                ),
                "metrics.json",
            )
            for dataset in spec["datasets"]
            for method in spec["methods"]
            for ratio in config["ratios"]
            for seed in config["seeds"]
        }
    )


def plateau_metrics(wildcards):
    """The longer runs of a table's all-labels bounds that say whether they are at their
    plateau (`convergence:`); none when the config does not ask."""
    check = config.get("convergence")
    if not check:
        return []
    spec = config["tables"][wildcards.table]
    return sorted(
        f"runs/{dataset}/{method}/rall/x{check['multiple']}/s{config['seeds'][0]}/metrics.json"
        for dataset in spec["datasets"]
        for method in spec["methods"]
        if method_class(method).labeled_pool == "all"
    )


PLATEAU_RUN = "runs/{dataset}/{method}/rall/x{multiple}/s{seed}"


def plateau_train_inputs(wildcards):
    inputs = {
        "manifest": f"data/processed/{wildcards.dataset}/manifest.json",
        "split": f"data/splits/{wildcards.dataset}/split.json",
    }
    stages = method_class(wildcards.method).stages
    index = stages.index(wildcards.stage)
    if index > 0:
        run = PLATEAU_RUN.format(**dict(wildcards.items()))
        inputs["previous"] = f"{run}/{stages[index - 1]}/model.pt"
    return inputs


def plateau_model(wildcards):
    run = PLATEAU_RUN.format(**dict(wildcards.items()))
    return [f"{run}/{method_class(wildcards.method).stages[-1]}/model.pt"]


# Figures and report pages (workflow/rules/figures.smk) ----------------------------------

import mona.report.ablations as ablation
import mona.report.table5 as table5
from mona.report.compare import dataset_label
from mona.report.figures import display_names, figure_config_problems, qualitative_plans


report: "../report/workflow.rst"


_figure_problems = figure_config_problems(config)
if _figure_problems:
    sys.exit(
        "error: problems in the config:\n" + "\n".join(f"  - {m}" for m in _figure_problems)
    )

QUALITATIVE = qualitative_plans(config)


def logged(log, step, *args, **kwargs):
    """Run a report step with its output in the rule's log; bad input ends it with a list."""
    from mona.workflow import main

    main(lambda _: step(*args, **kwargs), SimpleNamespace(log=log))


def all_table_metrics(wildcards=None):
    """metrics.json of every run some configured table aggregates."""
    return sorted(
        {path for table in config["tables"] for path in table_metrics(SimpleNamespace(table=table))}
    )


def comparison_inputs(wildcards=None):
    """Per-seed scores of Tables 1 and 4, and the metrics of Tables 2, 3 and 5 (if configured)."""
    inputs = {"seeds": "results/seed_scores.csv"}
    for name in ablation.TABLES:
        if name not in ablation.section(config):
            continue
        inputs[name] = ablation.metrics_paths(config, name, RUN, run_ratio)
    if table5.section(config):
        inputs["table5"] = table5.metrics_paths(config, RUN, run_ratio)
    return inputs


def all_run_metrics(wildcards=None):
    """Final metrics.json of every run any table or figure of the config aggregates."""
    paths = set(all_table_metrics())
    for name in ablation.section(config):
        paths.update(ablation.metrics_paths(config, name, RUN, run_ratio))
    if table5.section(config):
        paths.update(
            p for p in table5.metrics_paths(config, RUN, run_ratio)
            if Path(p).parent.name.startswith("s")
        )  # fmt: skip
    return sorted(paths)


def qualitative_runs(wildcards):
    plan = QUALITATIVE[wildcards.figure]
    runs = [
        RUN.format(
            dataset=plan.dataset, method=method, ratio=run_ratio(plan.dataset, method, plan.ratio),
            seed=plan.seed,
        )
        for method in plan.methods
    ]
    return {
        "manifest": f"data/processed/{plan.dataset}/manifest.json",
        "split": f"data/splits/{plan.dataset}/split.json",
        "models": [
            f"{run}/{method_class(method).stages[-1]}/model.pt"
            for run, method in zip(runs, plan.methods)
        ],
        "metrics": [f"{run}/metrics.json" for run in runs],
    }


