# Config validation and the path functions every rule uses. No training logic lives here.
import os
import sys

from snakemake.utils import validate

from mona.config import check_config, split_variant
from mona.errors import DataError
from mona.registry import load_methods


validate(config, schema="../schemas/config.schema.yaml")
try:
    check_config(config)
except DataError as error:
    sys.exit("error: problems in the config:\n" + "\n".join(f"  - {m}" for m in error.messages))

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
    """The registered class of a run's method (`name` or `name~key=value+...`)."""
    return METHODS[split_variant(run_method)[0]]


def run_ratio(method, ratio):
    """Methods that label every training patient train once for all ratios."""
    return "all" if method_class(method).labeled_pool == "all" else str(ratio)


def seed_paths(suffix):
    """One path `RUN/suffix` per configured seed; the other wildcards are left to the rule."""
    escaped = suffix.replace("{", "{{").replace("}", "}}")
    pattern = f"runs/{{{{dataset}}}}/{{{{method}}}}/r{{{{ratio}}}}/s{{seed}}/{escaped}"
    return expand(pattern, seed=config["seeds"])


def _seeds_of(wildcards, suffix):
    values = dict(wildcards.items())
    return [f"{RUN.format(**values, seed=seed)}/{suffix}" for seed in config["seeds"]]


def train_inputs(wildcards):
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
    stage = method_class(wildcards.method).stages[-1]
    return _seeds_of(wildcards, f"{stage}/model.pt")


def table_metrics(wildcards):
    spec = config["tables"][wildcards.table]
    return sorted(
        {
            os.path.join(
                RUN.format(
                    dataset=dataset, method=method, ratio=run_ratio(method, ratio), seed=seed
                ),
                "metrics.json",
            )
            for dataset in spec["datasets"]
            for method in spec["methods"]
            for ratio in config["ratios"]
            for seed in config["seeds"]
        }
    )
