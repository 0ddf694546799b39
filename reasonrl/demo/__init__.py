"""Demo models for CPUs: the embedded tiny model and a real pretrained one (SmolLM2-135M-Instruct)."""
