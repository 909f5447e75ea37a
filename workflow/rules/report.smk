rule table:
    input:
        runs=table_metrics,
        plateau=plateau_metrics,
    output:
        csv="results/{table}.csv",
        md="results/{table}.md",
    log:
        "logs/tables/{table}.log",
    conda:
        "../envs/mona.yaml"
    script:
        "../scripts/table.py"
