"""Sampling engines (vLLM, transformers, an OpenAI-compatible server) and vLLM generation for training on a CPU."""
