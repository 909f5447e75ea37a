rule table:
    input:
        table_metrics,
    output:
        csv="results/{table}.csv",
        md="results/{table}.md",
    log:
        "logs/tables/{table}.log",
    script:
        "../scripts/table.py"
