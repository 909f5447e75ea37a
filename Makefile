# The two commands of the README. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: table1 table4 all test test-slurm lint clean

$(BIN)/snakemake: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

# A status every 30 s on the terminal; Snakemake's whole output in logs/snakemake/.
PROGRESS := $(BIN)/python -m mona.progress --every 30 --

table1: $(BIN)/snakemake
	$(PROGRESS) $(BIN)/snakemake --cores $(CORES) results/table1.csv

table4: $(BIN)/snakemake
	$(PROGRESS) $(BIN)/snakemake --cores $(CORES) results/table4.csv

all: $(BIN)/snakemake
	$(PROGRESS) $(BIN)/snakemake --cores $(CORES)

# A one-node SLURM cluster from Debian's packages (root), a tiny DAG through the SLURM profile.
test-slurm: $(BIN)/snakemake
	bash tests/slurm/cluster_test.sh

test: $(BIN)/snakemake
	$(BIN)/snakemake --lint
	$(BIN)/python -m pytest -q

lint: $(BIN)/snakemake
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

clean:
	rm -rf data runs results/*.csv results/*.md results/figures logs .snakemake
