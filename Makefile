# Shortcuts for the scripts in scripts/ (the README's quick start runs those directly).
.PHONY: demo test benchmark
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
benchmark:
	bash scripts/setup-venv.sh && HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/predictor.py
