rule synthesize:
    output:
        directory("data/raw/synthetic/{dataset}"),
    params:
        settings=lambda w: step_settings(config, "synthesize", w.dataset),
    log:
        "logs/synthesize/{dataset}.log",
    conda:
        "../envs/mona.yaml"
    script:
        "../scripts/synthesize.py"


rule preprocess:
    input:
        raw_input,
    output:
        "data/processed/{dataset}/manifest.json",
    params:
        settings=lambda w: step_settings(config, "preprocess", w.dataset),
    log:
        "logs/preprocess/{dataset}.log",
    conda:
        "../envs/mona.yaml"
    script:
        "../scripts/preprocess.py"


rule split:
    input:
        "data/processed/{dataset}/manifest.json",
    output:
        "data/splits/{dataset}/split.json",
    params:
        settings=lambda w: step_settings(config, "split", w.dataset),
    log:
        "logs/split/{dataset}.log",
    conda:
        "../envs/mona.yaml"
    script:
        "../scripts/split.py"
