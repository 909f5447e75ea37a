# One job trains (or evaluates) every seed of a (dataset, method, ratio) in turn: each job is a
# fresh process paying seconds of imports, which would outweigh short runs.


rule train:
    input:
        unpack(train_inputs),
    output:
        seed_paths("{stage}/model.pt"),
    params:
        seeds=config["seeds"],
        settings=lambda w: step_settings(config, "train", w.dataset, w.method, w.stage),
    log:
        "runs/{dataset}/{method}/r{ratio}/{stage}.train.log",
    threads: 1
    resources:
        gpu=1,
    conda:
        "../envs/mona.yaml"
    script:
        "../scripts/train.py"


rule evaluate:
    input:
        models=final_models,
        manifest="data/processed/{dataset}/manifest.json",
        split="data/splits/{dataset}/split.json",
    output:
        seed_paths("metrics.json"),
    params:
        settings=lambda w: step_settings(config, "evaluate", w.dataset, w.method),
    log:
        "runs/{dataset}/{method}/r{ratio}/evaluate.log",
    threads: 1
    resources:
        gpu=1,  # inference runs on the GPU where a job holds one (mona.gpu_slots)
    conda:
        "../envs/mona.yaml"
    script:
        "../scripts/evaluate.py"


rule evaluate_stage:
    # One stage of a multi-stage method on its own (e.g. "pre-training only" in Table 5).
    input:
        models=seed_paths("{stage}/model.pt"),
        manifest="data/processed/{dataset}/manifest.json",
        split="data/splits/{dataset}/split.json",
    output:
        seed_paths("{stage}/metrics.json"),
    params:
        settings=lambda w: step_settings(config, "evaluate", w.dataset, w.method, w.stage),
    log:
        "runs/{dataset}/{method}/r{ratio}/{stage}.evaluate.log",
    threads: 1
    resources:
        gpu=1,
    conda:
        "../envs/mona.yaml"
    script:
        "../scripts/evaluate.py"



# The all-labels bound's first seed at `convergence.multiple` x the schedule: the tables compare
# the bound with it (is it at its plateau?). Every stage trains in one job, in its own folder.
rule plateau_train:
    input:
        unpack(plateau_train_inputs),
    output:
        "runs/{dataset}/{method}/rall/x{multiple}/s{seed}/{stage}/model.pt",
    params:
        settings=lambda w: step_settings(config, "train", w.dataset, w.method, w.stage),
    log:
        "runs/{dataset}/{method}/rall/x{multiple}/s{seed}/{stage}.train.log",
    wildcard_constraints:
        multiple=r"\d+",
    threads: 1
    resources:
        gpu=1,
    conda:
        "../envs/mona.yaml"
    script:
        "../scripts/plateau.py"


use rule evaluate as plateau_evaluate with:
    input:
        models=plateau_model,
        manifest="data/processed/{dataset}/manifest.json",
        split="data/splits/{dataset}/split.json",
    output:
        "runs/{dataset}/{method}/rall/x{multiple}/s{seed}/metrics.json",
    params:
        settings=lambda w: step_settings(config, "evaluate", w.dataset, w.method),
        multiple=lambda w: int(w.multiple),
    log:
        "runs/{dataset}/{method}/rall/x{multiple}/s{seed}/evaluate.log",
    wildcard_constraints:
        multiple=r"\d+",
