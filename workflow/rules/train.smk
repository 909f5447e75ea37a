rule train:
    input:
        unpack(train_inputs),
    output:
        RUN + "/{stage}/model.pt",
    log:
        RUN + "/{stage}/train.log",
    benchmark:
        RUN + "/{stage}/benchmark.tsv"
    threads: 1
    resources:
        gpu=1,
    script:
        "../scripts/train.py"


rule evaluate:
    input:
        model=final_model,
        manifest="data/processed/{dataset}/manifest.json",
        split="data/splits/{dataset}/split.json",
    output:
        RUN + "/metrics.json",
    log:
        RUN + "/evaluate.log",
    benchmark:
        RUN + "/evaluate.benchmark.tsv"
    threads: 1
    script:
        "../scripts/evaluate.py"


rule evaluate_stage:
    # One stage of a multi-stage method on its own (e.g. "pre-training only" in Table 5).
    input:
        model=RUN + "/{stage}/model.pt",
        manifest="data/processed/{dataset}/manifest.json",
        split="data/splits/{dataset}/split.json",
    output:
        RUN + "/{stage}/metrics.json",
    log:
        RUN + "/{stage}/evaluate.log",
    threads: 1
    script:
        "../scripts/evaluate.py"
