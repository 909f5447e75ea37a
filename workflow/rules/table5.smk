# Paper Table 5: results/table5.csv (+ .md) from the config's `table5` section. Each framework is
# the run `mona~pretrain_framework=NAME` (plain `mona` for GLCon): its pre-training stage is
# scored on its own by `evaluate_stage` ("pre-training only") and the finished run by `evaluate`
# ("with fine-tuning"). GLCon's runs are MONA's, shared with Table 1.


_table5_problems = table5.config_problems(config)
if _table5_problems:
    sys.exit("error: problems in the config:\n" + "\n".join(f"  - {m}" for m in _table5_problems))


rule table5:
    input:
        lambda w: table5.metrics_paths(config, RUN, run_ratio),
    output:
        csv="results/table5.csv",
        md="results/table5.md",
    log:
        "logs/tables/table5.log",
    run:
        logged(log, table5.write_table, config, list(input), output.csv, output.md)
