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
    benchmark:
        "runs/{dataset}/{method}/r{ratio}/{stage}.train.benchmark.tsv"
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
    benchmark:
        "runs/{dataset}/{method}/r{ratio}/evaluate.benchmark.tsv"
    threads: 1
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
    benchmark:
        "runs/{dataset}/{method}/r{ratio}/{stage}.evaluate.benchmark.tsv"
    threads: 1
    conda:
        "../envs/mona.yaml"
    script:
        "../scripts/evaluate.py"
