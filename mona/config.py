"""The run configuration: one YAML, schema-checked, turned into the engine's typed settings.

`workflow/schemas/config.schema.yaml` checks keys and types (bad key -> message naming it);
`check_config` adds the checks a schema cannot express: method names and their hyperparameters,
table datasets, and protocol values that depend on the dataset.
"""

from __future__ import annotations

import copy
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from mona.augment import AugmentConfig
from mona.engine import TrainConfig
from mona.errors import DataError

SCHEMA = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"

PROTOCOL_DEFAULTS: dict[str, Any] = {
    "split": "paper",
    "split_seed": 0,
    "labeled": "patients",
    "checkpoint": "last",
    "asd": "symmetric",
    "units": "mm",
    "empty": "strict",
    "baselines": "shared",
}

# `protocol.baselines: reference` trains each baseline that names a reference code
# (`Method.reference_code`) as that code trains it, whatever the config's `train:` says.
# SSL4MIS's 2D scripts: SGD 0.01, momentum 0.9, wd 1e-4, poly 0.9 over 30 000 iterations, batch
# 12 labeled + 12 unlabeled, its RandomGenerator, ramps on absolute iterations.
REFERENCE_PROTOCOLS: dict[str, dict[str, dict[str, Any]]] = {
    "ssl4mis": {
        "train": {
            "iterations": 30000,
            "stage_iterations": {},
            "stage_lr": {},
            "batch_labeled": 12,
            "batch_unlabeled": 12,
            "lr": 0.01,
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "schedule": "poly",
            "poly_power": 0.9,
        },
        "augment": {"weak": "ssl4mis"},
    }
}


def load_config(path: Path) -> dict:
    """Read and validate a config file outside Snakemake (tests, benchmarks)."""
    config = yaml.safe_load(Path(path).read_text())
    validate_schema(config)
    check_config(config)
    return config


def validate_schema(config: dict) -> None:
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        problems.append(f"config {where}: {error.message}")
    if problems:
        raise DataError(problems)


def coerce_command_line(config: dict) -> dict:
    """The config with `--config` strings turned into the types the schema asks for.

    Snakemake hands nested `--config` values over as strings (`train="{iterations: 1000}"`
    gives iterations '1000'); a number, boolean or null the schema expects is parsed from its
    text, and a free-form value (a method's hyperparameter) is read as a YAML scalar.
    """
    schema = yaml.safe_load(SCHEMA.read_text())
    return _coerce(config, schema, schema)


def _coerce(value: Any, schema: dict, root: dict) -> Any:
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        extra = extra if isinstance(extra, dict) else {}
        return {k: _coerce(v, properties.get(k, extra), root) for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items", {})
        return [_coerce(v, items if isinstance(items, dict) else {}, root) for v in value]
    if not isinstance(value, str):
        return value
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if not types and "enum" not in schema:  # free-form: a method's hyperparameter
        parsed = yaml.safe_load(value) if value.strip() else value
        return parsed if isinstance(parsed, (bool, int, float)) or parsed is None else value
    if "integer" in types or "number" in types:
        try:
            number = float(value)
        except ValueError:
            return value
        if number.is_integer():  # 5, not 5.0: ratios name run folders (r5)
            return int(number)
        return number if "number" in types else value
    if "boolean" in types and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def protocol(config: dict, dataset: str | None = None) -> dict[str, Any]:
    """Protocol switches in force, with a dataset's own `split` overriding the global one."""
    switches = {**PROTOCOL_DEFAULTS, **config.get("protocol", {})}
    if dataset is not None and "split" in config["datasets"][dataset]:
        switches["split"] = config["datasets"][dataset]["split"]
    return switches


def reference_protocol(config: dict, method: str | None) -> dict[str, dict[str, Any]]:
    """The settings `protocol.baselines: reference` imposes on `method` ({} if none)."""
    if method is None or protocol(config)["baselines"] != "reference":
        return {}
    from mona.registry import load_methods

    cls = load_methods(tuple(config.get("plugins", [])))[split_variant(method)[0]]
    code = getattr(cls, "reference_code", None)
    return REFERENCE_PROTOCOLS[code] if code else {}


def dataset_train(config: dict, dataset: str | None = None) -> dict[str, Any]:
    """The `train:` section as it applies to `dataset`: its `datasets.<name>.train` keys laid
    over the top-level ones (a key given there replaces the top-level value whole)."""
    train = dict(config.get("train", {}))
    if dataset is not None:
        train.update(config["datasets"][dataset].get("train") or {})
    return train


def train_settings(
    config: dict, method: str | None = None, dataset: str | None = None
) -> dict[str, Any]:
    """The `train:` values a run of `method` on `dataset` trains with (the dataset's own keys
    over the top-level ones, and the reference code's over both, if imposed)."""
    return {**dataset_train(config, dataset), **reference_protocol(config, method).get("train", {})}


def augment_settings(config: dict, method: str | None = None) -> dict[str, Any]:
    return {**config.get("augment", {}), **reference_protocol(config, method).get("augment", {})}


def train_config(
    config: dict, method: str | None = None, dataset: str | None = None
) -> TrainConfig:
    return TrainConfig(**train_settings(config, method, dataset))


# The schedule's lengths: what `stretched_config` multiplies.
SCHEDULE_LENGTHS = ("iterations", "stage_iterations", "step_every")


def stretched_config(config: dict, multiple: int) -> dict:
    """`config` with its training schedule `multiple` times as long: iterations, stage
    iterations and lr-step interval scaled alike, so ramps and decays keep their shape; a
    dataset's own schedule keys (`datasets.<name>.train`) are scaled too."""
    stretched = copy.deepcopy(config)
    train = stretched.setdefault("train", {})
    train.setdefault("iterations", TrainConfig.iterations)
    train.setdefault("step_every", TrainConfig.step_every)
    sections = [train] + [
        spec["train"] for spec in stretched["datasets"].values() if spec.get("train")
    ]
    for section in sections:
        for key in SCHEDULE_LENGTHS:
            if key == "stage_iterations" and key in section:
                section[key] = {stage: int(n) * multiple for stage, n in section[key].items()}
            elif key in section:
                section[key] = int(section[key]) * multiple
    return stretched


def augment_config(config: dict, method: str | None = None) -> AugmentConfig:
    values = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in augment_settings(config, method).items()
    }
    return AugmentConfig(**values)


VARIANT_SEPARATOR = "~"


def split_variant(run_method: str) -> tuple[str, dict[str, Any]]:
    """A run's method name -> (registered method, hyperparameter overrides).

    Ablation runs name their overrides in the path: `mona~k=3+lambda1=0.01` is `mona` with
    k = 3 and lambda1 = 0.01 on top of the config's `methods.mona` section.
    """
    name, _, variant = run_method.partition(VARIANT_SEPARATOR)
    overrides: dict[str, Any] = {}
    for item in filter(None, variant.split("+")):
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ValueError(f"bad method variant {run_method!r}: use name~key=value+key=value")
        overrides[key] = yaml.safe_load(value)
    return name, overrides


def variant_name(method: str, overrides: dict[str, Any]) -> str:
    """Inverse of `split_variant` (keys sorted, so one variant has one path)."""
    if not overrides:
        return method
    items = "+".join(f"{k}={_format_value(v)}" for k, v in sorted(overrides.items()))
    return f"{method}{VARIANT_SEPARATOR}{items}"


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if any(c in text for c in "+=/~ "):
        raise ValueError(f"variant value {value!r} cannot be part of a path")
    return text


def method_hparams(config: dict, run_method: str) -> dict[str, Any]:
    """The config's overrides for a method, then the run's own variant overrides."""
    name, overrides = split_variant(run_method)
    return {**((config.get("methods") or {}).get(name) or {}), **overrides}


def check_config(config: dict) -> None:
    """Semantic checks; raises DataError listing every problem."""
    from mona.registry import load_methods

    problems = []
    methods = load_methods(tuple(config.get("plugins", [])))
    known_train = {f.name for f in fields(TrainConfig)}
    sections = [("train", config.get("train", {}))] + [
        (f"datasets.{name}.train", spec.get("train") or {})
        for name, spec in config["datasets"].items()
    ]
    for where, section in sections:
        for key in section:
            if key not in known_train:
                problems.append(f"config {where}.{key}: unknown key")
    for key, values in (config.get("methods") or {}).items():
        if key not in methods:
            problems.append(f"config methods.{key}: unknown method")
            continue
        for name, value in (values or {}).items():
            if name not in methods[key].defaults:
                problems.append(
                    f"config methods.{key}.{name}: unknown hyperparameter "
                    f"(known: {', '.join(sorted(methods[key].defaults)) or 'none'})"
                )
            elif problem := _type_problem(methods[key].defaults[name], value):
                problems.append(f"config methods.{key}.{name}: {value!r} {problem}")
    for table, spec in config.get("tables", {}).items():
        for dataset in spec["datasets"]:
            if dataset not in config["datasets"]:
                problems.append(f"config tables.{table}.datasets: unknown dataset {dataset!r}")
        for method in spec["methods"]:
            if split_variant(method)[0] not in methods:
                problems.append(
                    f"config tables.{table}.methods: unknown method {method!r} "
                    f"(registered: {', '.join(sorted(methods))})"
                )
    for name, dataset in config["datasets"].items():
        if dataset["raw"] == "synthetic" and "synthetic" not in dataset:
            problems.append(f"config datasets.{name}: raw is 'synthetic' but no synthetic section")
        split = protocol(config, name)["split"]
        key = f"datasets.{name}.split" if "split" in dataset else "protocol.split"
        if split == "ssl4mis" and dataset["kind"] != "acdc":
            problems.append(f"config datasets.{name}: split 'ssl4mis' exists for ACDC only")
        elif split not in ("paper", "ssl4mis") and not Path(split).is_file():
            problems.append(
                f"config {key}: {split!r} is neither 'paper', 'ssl4mis' nor an existing "
                "JSON split file"
            )
        fractions = dataset.get("fractions")
        if fractions is not None:
            if len(fractions) != 3 or any(f < 0 for f in fractions):
                problems.append(
                    f"config datasets.{name}.fractions: three shares >= 0 (train, val, test), "
                    f"got {fractions}"
                )
            elif not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
                problems.append(
                    f"config datasets.{name}.fractions: must sum to 1, got {fractions} "
                    f"(sum {sum(fractions):g})"
                )
    for method in sorted(planned_methods(config)):
        problems.extend(run_method_problems(methods, method))
    try:
        augment_config(config)
    except ValueError as error:
        problems.append(f"config augment: {error}")
    if problems:
        raise DataError(problems)


def ratio_names(config: dict) -> list[str]:
    """The ratio folder names (`r{name}`) the config can ask for: its ratios, those of its
    ablations and figures, and `all`."""
    values = list(config.get("ratios", []))
    for spec in (config.get("ablations") or {}).values():
        if isinstance(spec, dict) and "ratio" in spec:
            values.append(spec["ratio"])
    for spec in ((config.get("figures") or {}).get("qualitative") or {}).values():
        if isinstance(spec, dict) and "ratio" in spec:
            values.append(spec["ratio"])
    names = {ratio_name(v) for v in values}
    return sorted(names) + ["all"]


def ratio_name(value: float | str) -> str:
    """A ratio's folder name: `5` for 5 or 5.0, `2.5` for 2.5."""
    number = float(value)
    return str(int(number)) if number.is_integer() else str(number)


def planned_train_patients(config: dict, dataset: str) -> int | None:
    """How many training patients `dataset`'s split will hold, where the config alone says so
    (synthetic data under the `paper` split, the `ssl4mis` lists, a split file); None where
    only the data can (real data under the `paper` split)."""
    import json

    from mona.data.splits import DEFAULT_FRACTIONS, SSL4MIS_TRAIN, split_sizes

    spec = config["datasets"][dataset]
    split = protocol(config, dataset)["split"]
    if split == "ssl4mis":
        return len(SSL4MIS_TRAIN)
    if split == "paper":
        if spec["raw"] != "synthetic":
            return None
        fractions = spec.get("fractions", DEFAULT_FRACTIONS)
        return split_sizes(spec["synthetic"]["patients"], fractions)[0]
    try:
        train = json.loads(Path(split).read_text()).get("train")
    except (OSError, ValueError, AttributeError):
        return None  # the split rule names the problem
    return len(train) if isinstance(train, list) else None


def shared_ratio(config: dict, dataset: str, ratio: float | str) -> str:
    """The ratio whose runs stand for `ratio` on `dataset`: the smallest ratio the config plans
    that labels the same patients (on 15 training patients 1 % and 5 % both label one, so
    one set of runs serves both rows), or `ratio` itself where no other does or the count is
    not known before the data (`labeled: slices`, real data under the `paper` split)."""
    from mona.data.splits import labeled_count

    name = ratio_name(ratio)
    switches = protocol(config, dataset)
    patients = planned_train_patients(config, dataset)
    if switches["labeled"] != "patients" or patients is None:
        return name

    def count(value: str) -> int:
        return labeled_count(float(value), patients, switches["split"])

    same = [r for r in ratio_names(config) if r != "all" and count(r) == count(name)]
    return min(same, key=float) if same else name


def run_ratio(config: dict, dataset: str, method: str, ratio: float | str) -> str:
    """The ratio folder (`r{name}`) holding the runs of `method` at `ratio` on `dataset`: `all`
    for a method that labels every training patient, else `shared_ratio`'s."""
    from mona.registry import load_methods

    cls = load_methods(tuple(config.get("plugins", [])))[split_variant(method)[0]]
    return "all" if cls.labeled_pool == "all" else shared_ratio(config, dataset, ratio)


def planned_methods(config: dict) -> set[str]:
    """Every run method name (with variants) the config's tables name."""
    return {m for spec in config.get("tables", {}).values() for m in spec["methods"]}


def run_method_problems(methods: dict, run_method: str) -> list[str]:
    """What is wrong with a run's method name `name~key=value+...`: unknown method or key, or a
    value that does not have its default's type (or is not finite)."""
    try:
        name, overrides = split_variant(run_method)
    except ValueError as error:
        return [f"run {run_method!r}: {error}"]
    if name not in methods:
        return [f"run {run_method!r}: unknown method {name!r}"]
    defaults = methods[name].defaults
    problems = []
    for key, value in overrides.items():
        if key not in defaults:
            problems.append(
                f"run {run_method!r}: {name} has no hyperparameter {key!r} "
                f"(known: {', '.join(sorted(defaults)) or 'none'})"
            )
            continue
        problem = _type_problem(defaults[key], value)
        if problem:
            problems.append(f"run {run_method!r}: {key}={value!r} {problem}")
    return problems


def _type_problem(default: Any, value: Any) -> str | None:
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number (default {default!r})"
        if not math.isfinite(value):
            return "must be finite"
        if isinstance(default, int) and not float(value).is_integer():
            return f"must be a whole number (default {default!r})"
        return None
    if isinstance(default, str) and not isinstance(value, str):
        return f"must be text (default {default!r})"
    return None


EVALUATION_SWITCHES = ("asd", "units", "empty")
TRAINING_SWITCHES = ("labeled", "checkpoint", "baselines")
# Train settings that change how often a run logs or saves, never what it learns.
BOOKKEEPING = ("log_every", "checkpoint_every")


def step_settings(
    config: dict, step: str, dataset: str, method: str | None = None, stage: str | None = None
) -> dict[str, Any]:
    """The config values one DAG step's output depends on beyond its input files.

    The rules pass these as `params`, so Snakemake reruns a step (and what follows it) when one
    of them changes, instead of serving numbers made under the old settings.
    """
    spec = config["datasets"][dataset]
    switches = protocol(config, dataset)
    if step == "synthesize":
        return {"kind": spec["kind"], **spec.get("synthetic", {})}
    if step == "preprocess":
        image_size = dataset_train(config, dataset).get("image_size")
        return {"kind": spec["kind"], "image_size": image_size}
    if step == "split":
        return {
            "split": switches["split"],
            "split_seed": switches["split_seed"],
            "fractions": spec.get("fractions"),
        }
    if step == "train":
        from mona.registry import load_methods

        name = split_variant(method)[0]
        cls = load_methods(tuple(config.get("plugins", [])))[name]
        hparams = method_hparams(config, method)
        if stage != cls.stages[-1]:  # an earlier stage never reads the last stage's keys
            finetune_only = getattr(cls, "finetune_only", frozenset())
            hparams = {k: v for k, v in hparams.items() if k not in finetune_only}
        train = {
            k: v
            for k, v in train_settings(config, method, dataset).items()
            if k not in BOOKKEEPING
        }
        # the lr this stage starts from, not every stage's: a stage-1 lr of its own reruns
        # only the runs that have such a stage
        train.pop("stage_lr", None)
        if stage is not None:
            lr = train_config(config, method, dataset).lr_for(stage, name)
            if lr != train.get("lr", TrainConfig.lr):
                train["lr"] = lr
        return {
            "train": train,
            "augment": augment_settings(config, method),
            "hparams": dict(sorted(hparams.items())),
            **{s: switches[s] for s in TRAINING_SWITCHES},
        }
    if step == "evaluate":
        settings: dict[str, Any] = {s: switches[s] for s in EVALUATION_SWITCHES}
        if method is not None:
            # what made the weights: a metrics.json is current only if they are, so a failed
            # or killed retrain under new settings can never leave the old scores standing
            from mona.registry import load_methods

            stages = load_methods(tuple(config.get("plugins", [])))[
                split_variant(method)[0]
            ].stages
            upto = stages[: stages.index(stage) + 1] if stage else stages
            settings["training"] = {
                name: step_settings(config, "train", dataset, method, name) for name in upto
            }
        return settings
    raise ValueError(f"unknown DAG step {step!r}")
