"""Methods are found by name, plugins register from a file, and bad config keys are named."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mona.config import (
    check_config,
    coerce_command_line,
    step_settings,
    stretched_config,
    train_config,
    validate_schema,
)
from mona.errors import DataError
from mona.registry import get_method, load_methods

REPO = Path(__file__).resolve().parent.parent
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_builtin_methods_are_registered_with_their_dag_description():
    methods = load_methods()
    assert {"unet_f", "unet_l", "mt"} <= set(methods)
    assert methods["unet_f"].labeled_pool == "all"
    assert methods["unet_l"].labeled_pool == "subset" and not methods["unet_l"].uses_unlabeled
    assert methods["mt"].stages == ("train",) and methods["mt"].display_name == "MT"
    with pytest.raises(KeyError, match="unknown method 'nope'"):
        get_method("nope")


def test_a_plugin_file_registers_a_method(tmp_path):
    plugin = tmp_path / "my_method.py"
    plugin.write_text(
        "from baselines.supervised import UNetLabeled\n"
        "from mona.registry import register\n\n"
        "@register('throwaway')\n"
        "class Throwaway(UNetLabeled):\n"
        "    display_name = 'Throwaway'\n"
    )
    assert get_method("throwaway", (str(plugin),)).display_name == "Throwaway"


def test_shipped_configs_are_valid():
    for name in ("config.yaml", "quick.yaml", "paper.yaml"):
        config = yaml.safe_load((REPO / "config" / name).read_text())
        validate_schema(config)
        check_config(config)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["train"].update(iterations=-1), "config train.iterations"),
        (lambda c: c["train"].update(itrations=5), "itrations"),
        (lambda c: c["protocol"].update(asd="both"), "config protocol.asd"),
        (lambda c: c.update(extra=1), "extra"),
        (lambda c: c["datasets"]["acdc"].update(kind="brats"), "config datasets.acdc.kind"),
    ],
)
def test_schema_errors_name_the_key(edit, message):
    config = copy.deepcopy(DEFAULT)
    edit(config)
    with pytest.raises(DataError, match=message):
        validate_schema(config)


def test_semantic_errors_are_all_reported_at_once():
    config = copy.deepcopy(DEFAULT)
    config["methods"] = {"mt": {"ema_decy": 0.9}, "nonexistent": {}}
    config["tables"]["table1"]["methods"].append("fancy")
    config["datasets"]["lits"]["split"] = "ssl4mis"
    with pytest.raises(DataError) as error:
        check_config(config)
    text = str(error.value)
    for expected in ("methods.mt.ema_decy", "methods.nonexistent", "'fancy'", "ACDC only"):
        assert expected in text


def test_command_line_strings_get_the_types_the_schema_asks_for():
    # what `snakemake --config train="{iterations: 7}" seeds=[0,1] ...` hands over
    given = {
        "train": {"iterations": "7", "lr": "0.1", "bf16": "true", "device": "7", "cache": "auto"},
        "seeds": ["0", "1"],
        "ratios": ["5", "2.5"],
        "augment": {"scale": ["0.9", "1.1"]},
        "methods": {"mt": {"consistency": "0.2", "name": "moco", "flag": "false"}},
    }
    assert coerce_command_line(given) == {
        "train": {"iterations": 7, "lr": 0.1, "bf16": True, "device": "7", "cache": "auto"},
        "seeds": [0, 1],
        "ratios": [5, 2.5],  # 5, not 5.0: it names the run folder r5
        "augment": {"scale": [0.9, 1.1]},
        "methods": {"mt": {"consistency": 0.2, "name": "moco", "flag": False}},
    }
    assert coerce_command_line({"train": {"iterations": "many"}}) == {
        "train": {"iterations": "many"}  # left for the schema to name
    }


def test_the_config_reference_names_every_key_the_schema_accepts():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    reference = (REPO / "config" / "README.md").read_text()
    keys = list(schema["properties"])
    for section in ("protocol", "augment"):
        keys += list(schema["properties"][section]["properties"])
    keys += list(schema["$defs"]["train"]["properties"])
    keys += list(schema["properties"]["datasets"]["additionalProperties"]["properties"])
    missing = [key for key in keys if f"`{key}`" not in reference]
    assert not missing, f"config/README.md does not describe {missing}"


def test_a_datasets_own_train_keys_lie_over_the_top_level_ones():
    config = copy.deepcopy(DEFAULT)
    for spec in config["datasets"].values():
        spec.pop("train", None)
    config["train"].update(iterations=100, stage_iterations={"pretrain": 30}, lr=0.1)
    config["datasets"]["mmwhs"]["train"] = {"iterations": 200, "stage_iterations": {"pretrain": 70}}
    validate_schema(config)
    check_config(config)
    mmwhs, acdc = train_config(config, "mona", "mmwhs"), train_config(config, "mona", "acdc")
    assert (mmwhs.iterations, mmwhs.iterations_for("pretrain"), mmwhs.lr) == (200, 70, 0.1)
    assert (acdc.iterations, acdc.iterations_for("pretrain"), acdc.lr) == (100, 30, 0.1)
    # the plateau check's longer schedule stretches a dataset's own lengths too
    longer = stretched_config(config, 4)
    assert train_config(longer, "mona", "mmwhs").iterations_for("pretrain") == 280
    assert train_config(longer, "mona", "mmwhs").iterations == 800
    assert train_config(longer, "mona", "acdc").iterations == 400
    # a dataset that names only its length keeps the shared stage lengths, stretched
    config["datasets"]["lits"]["train"] = {"iterations": 150}
    lits = train_config(stretched_config(config, 4), "mona", "lits")
    assert (lits.iterations, lits.iterations_for("pretrain")) == (600, 120)
    # Snakemake's params for a step carry them, so changing one retrains that dataset only
    settings = step_settings(config, "train", "mmwhs", "unet_f", "train")
    assert settings["train"]["iterations"] == 200
    assert step_settings(config, "train", "acdc", "unet_f", "train")["train"]["iterations"] == 100
    # the reference protocol imposes its schedule over both
    config["protocol"]["baselines"] = "reference"
    assert train_config(config, "mt", "mmwhs").iterations == 30000


def test_a_misspelled_dataset_train_key_is_named_with_its_dataset():
    config = copy.deepcopy(DEFAULT)
    config["datasets"]["lits"]["train"] = {"iteratoins": 5}
    with pytest.raises(DataError, match="datasets.lits.train"):
        validate_schema(config)
    with pytest.raises(DataError, match="datasets.lits.train.iteratoins: unknown key"):
        check_config(config)


def test_scores_are_refused_for_weights_trained_with_another_datasets_settings(tmp_path):
    from dataclasses import asdict

    from mona.workflow import check_trained_as_configured

    config = copy.deepcopy(DEFAULT)
    config["datasets"]["acdc"].pop("train", None)
    config["datasets"]["mmwhs"]["train"] = {"iterations": 2 * config["train"]["iterations"]}
    record = {"stage": "train", "train": asdict(train_config(config, "unet_f", "mmwhs"))}
    check_trained_as_configured(config, "mmwhs", "unet_f", record, tmp_path / "train.json")
    with pytest.raises(DataError, match="train.iterations"):
        check_trained_as_configured(config, "acdc", "unet_f", record, tmp_path / "train.json")


def test_a_stage_lr_changes_that_stage_s_settings_and_no_other_run_s():
    config = copy.deepcopy(DEFAULT)
    config["train"].pop("stage_lr", None)
    before = {
        (method, stage): step_settings(config, "train", "acdc", method, stage)
        for method, stage in (("unet_l", "train"), ("mona", "finetune"), ("mona", "pretrain"))
    }
    config["train"]["stage_lr"] = {"pretrain": 0.01}
    validate_schema(config)
    after = {key: step_settings(config, "train", "acdc", *key) for key in before}
    # Snakemake reruns only the stage whose starting lr moved (and what reads its weights)
    assert after["unet_l", "train"] == before["unet_l", "train"]
    assert after["mona", "finetune"] == before["mona", "finetune"]
    assert after["mona", "pretrain"]["train"]["lr"] == 0.01
    assert before["mona", "pretrain"]["train"]["lr"] == config["train"]["lr"]
    train = train_config(config, "mona", "acdc")
    assert (train.lr_for("pretrain"), train.lr_for("finetune")) == (0.01, config["train"]["lr"])
    # the audit of a stage's schedule sums with that stage's lr
    from mona.audit import unsupervised_schedule

    assert unsupervised_schedule(config, "mona", stage="pretrain").lr == 0.01
    assert unsupervised_schedule(config, "mona", stage="finetune").lr == config["train"]["lr"]
    # a stretched schedule keeps the lr
    assert train_config(stretched_config(config, 4), "mona", "acdc").lr_for("pretrain") == 0.01
    # `method.stage` names one method's stage and wins over the stage name alone
    config["train"]["stage_lr"] = {"pretrain": 0.01, "bcp.pretrain": 0.3}
    assert step_settings(config, "train", "acdc", "bcp", "pretrain")["train"]["lr"] == 0.3
    assert step_settings(config, "train", "acdc", "gcl", "pretrain")["train"]["lr"] == 0.01
    assert step_settings(config, "train", "acdc", "bcp", "selftrain") == step_settings(
        DEFAULT, "train", "acdc", "bcp", "selftrain"
    )
    config["train"]["stage_lr"] = {"pretrain": 0}
    with pytest.raises(Exception, match="stage_lr|0"):
        validate_schema(config)


def test_the_default_starts_contrastive_stage_1_at_the_paper_s_lr_and_bcp_s_at_its_own():
    # a contrastive stage 1 at the default's lr 0.2 ends with oversized weights that cost the
    # fine-tuned model points; BCP's stage 1 is supervised and keeps the default's lr
    for method in ("gcl", "plc", "scs", "mona"):
        assert step_settings(DEFAULT, "train", "acdc", method, "pretrain")["train"]["lr"] == 0.01
    lr = DEFAULT["train"]["lr"]
    assert step_settings(DEFAULT, "train", "acdc", "bcp", "pretrain")["train"]["lr"] == lr
    assert step_settings(DEFAULT, "train", "acdc", "mona", "finetune")["train"]["lr"] == lr
