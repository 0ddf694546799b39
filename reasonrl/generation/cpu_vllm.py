"""vLLM generation for TRL's GRPOTrainer when the trainer runs on a CPU: colocated engines and `trl vllm-serve`.

TRL 1.16's VLLMGeneration assumes CUDA in three places. `ClipHigherGRPOTrainer` (reasonrl/trainer/trainer.py) uses the subclass below
instead, only when its device is the CPU (on GPUs TRL's code runs untouched, NCCL weight transfer included):
  1. Weight sync. vLLM's CPU backend repacks every linear layer for oneDNN once its weights are loaded and drops the
     checkpoint-format tensor, so TRL's per-parameter `model.load_weights` fails ("'Parameter' object has no
     attribute 'weight_loader'"). Syncs go through vLLM's own `reload_weights`, which loads layer by layer and repacks.
     A tied output layer (lm_head sharing the embeddings) is repacked only if it receives a weight itself, so the
     embeddings are also sent under the output layer's name; otherwise it keeps computing logits from the old weights.
  2. Server mode. TRL pushes weights to the server over NCCL, CUDA only. Here the main process writes them to
     `<output_dir>/vllm_weights/model.safetensors` and calls the server's `reload_weights` through its
     `/collective_rpc` endpoint (vLLM's dev mode, which `trl vllm-serve` turns on), so the server must be able to read
     that directory: same machine or a shared filesystem.
  3. Colocate mode. TRL gives the engine no dtype, and vLLM downcasts a float32 checkpoint to bfloat16; here the
     engine computes in the training model's dtype, so its log-probs are the trainer's. Its KV cache holds the
     generation batch (the sequences TRL generates at once x vllm_max_model_length, by default the model's context)
     instead of a fraction of GPU memory; VLLM_CPU_KVCACHE_SPACE (GiB) overrides it. Chunked prefill is off: vLLM's
     CPU runner cannot rewind a seeded request's generator when a prompt's prefill is split over two steps ("CPU
     Generator does not use offset"), and validation (reasonrl/trainer/validation.py) samples with per-request seeds. For the
     same reason a CPU server for a run that validates must be started with --no-enable-chunked-prefill.

Commands (the tiny recipe; README "vLLM on a CPU" has the timings):
    accelerate launch --config_file accelerate_configs/cpu.yaml train_grpo.py --config recipes/tiny.yaml \\
        --use_vllm true --vllm_mode colocate
    VLLM_CPU_KVCACHE_SPACE=1 trl vllm-serve --model .cache/tiny/sft --dtype float32 --host 127.0.0.1 --port 8011 \\
        --no-enable-chunked-prefill &
    accelerate launch train_grpo.py --config recipes/tiny.yaml --use_vllm true --vllm_mode server \\
        --vllm_server_host 127.0.0.1 --vllm_server_port 8011
"""

import os
from contextlib import contextmanager
from functools import partial

import torch
from trl.generation.vllm_generation import VLLMGeneration


class CPUVLLMGeneration(VLLMGeneration):
    """TRL's VLLMGeneration with CPU engines and a weight sync that needs no CUDA (see the module docstring)."""

    def __init__(self, *args, weights_dir: str, reload_timeout_s: float = 600.0, **kwargs):
        self.weights_dir, self.reload_timeout_s = weights_dir, reload_timeout_s
        super().__init__(*args, **kwargs)

    def _init_vllm(self):
        if self.mode == "server":
            self._init_server()
        elif self.mode == "colocate":
            self._init_colocate()
        else:
            super()._init_vllm()  # TRL's error for an unknown mode
        self.accelerator.wait_for_everyone()

    def _init_server(self):
        from trl.generation.vllm_client import VLLMClient

        if not self.accelerator.is_main_process:
            return
        base_url = self.server_base_url or f"http://{self.server_host}:{self.server_port}"
        self.vllm_client = VLLMClient(base_url=base_url, group_port=self.group_port,
                                      connection_timeout=self.server_timeout)
        self.vllm_client.get_server_info()  # fails now, naming VLLM_SERVER_DEV_MODE, if the RPC endpoints are off
        print(f"[vllm] no CUDA: weights reach the vLLM server at {base_url} through {self.weights_dir} and its "
              "reload_weights RPC (TRL's NCCL weight transfer needs CUDA)", flush=True)

    def _init_colocate(self):
        from trl.trainer.utils import ensure_master_addr_port
        from vllm import LLM

        if self.tensor_parallel_size != 1 or self.enable_sleep_mode:
            raise ValueError("vLLM colocated on CPU processes runs one engine per process: set "
                             "vllm_tensor_parallel_size: 1 and vllm_enable_sleep_mode: false.")
        accelerator = self.accelerator
        # vLLM's external launcher joins the training processes' rendezvous, as in TRL's colocate mode.
        os.environ.update(RANK=str(accelerator.process_index), LOCAL_RANK=str(accelerator.local_process_index),
                          WORLD_SIZE=str(accelerator.num_processes))
        ensure_master_addr_port()
        config = self.model.config.get_text_config()
        max_len = self.max_model_length or config.max_position_embeddings
        kv_bytes = kv_cache_bytes(config, self.model.dtype, self.max_num_seqs * max_len)
        self.llm = LLM(model=self.model.name_or_path, dtype=self.model.dtype, max_model_len=max_len,
                       max_num_seqs=self.max_num_seqs, kv_cache_memory_bytes=kv_bytes, model_impl=self.model_impl,
                       distributed_executor_backend="external_launcher", seed=accelerator.process_index,
                       enable_chunked_prefill=False, max_num_batched_tokens=max(4096, max_len),
                       logprobs_mode="processed_logprobs",
                       trust_remote_code=self.trust_remote_code)
        self._llm_weights_sleeping = False
        if accelerator.is_main_process:
            kv = (f"VLLM_CPU_KVCACHE_SPACE={os.environ['VLLM_CPU_KVCACHE_SPACE']} GiB"
                  if os.environ.get("VLLM_CPU_KVCACHE_SPACE") else
                  f"{kv_bytes / 2**20:.0f} MiB = {self.max_num_seqs} sequences x {max_len} tokens")
            print(f"[vllm] colocated CPU engine per process: dtype {self.model.dtype}, KV cache {kv}; weights sync "
                  "through vLLM's reload_weights", flush=True)

    def sync_weights(self):
        if self.mode == "colocate":
            runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
            runner.reload_weights(weights_iterator=self._weights_for_vllm())
            self.llm.reset_prefix_cache()
        elif self.accelerator.is_main_process:
            self._reload_server_from_file(self._weights_for_vllm())
            self.vllm_client.reset_prefix_cache()
        else:
            for _ in self._iter_named_params():  # take part in the gather collectives (ZeRO-3)
                pass

    def _weights_for_vllm(self):
        """TRL's (name, tensor) stream, plus the embeddings again under the output layer's name when they are tied."""
        model = self.model
        tied = None
        if getattr(model.config.get_text_config(), "tie_word_embeddings", False):
            output = model.get_output_embeddings()
            tied = (next(n for n, p in model.named_parameters() if p is model.get_input_embeddings().weight),
                    next(n for n, m in model.named_modules() if m is output) + ".weight")
        for name, tensor in self._iter_named_params():
            yield name, tensor
            if tied and name == tied[0]:
                yield tied[1], tensor

    def _reload_server_from_file(self, weights):
        import requests
        from safetensors.torch import save_file

        os.makedirs(self.weights_dir, exist_ok=True)
        path = os.path.join(self.weights_dir, "model.safetensors")
        save_file({name: t.detach().to("cpu").contiguous().clone() for name, t in weights}, path)
        base_url = self.vllm_client.base_url
        try:
            response = requests.post(f"{base_url}/collective_rpc", json={
                "method": "reload_weights", "kwargs": {"weights_path": os.path.abspath(self.weights_dir)}},
                timeout=self.reload_timeout_s)
        finally:
            os.remove(path)
        if response.status_code != 200:
            raise RuntimeError(
                f"The vLLM server at {base_url} could not reload the weights from {self.weights_dir} "
                f"({response.status_code}: {response.text[:500]}). Without CUDA the trainer hands its weights to the "
                "server through that directory: run the server on this machine (or one sharing the filesystem), "
                "started with `trl vllm-serve` or VLLM_SERVER_DEV_MODE=1.")


def kv_cache_bytes(config, dtype: torch.dtype, tokens: int) -> int:
    """Bytes of KV cache for `tokens` tokens of a decoder with `config`'s attention shape, stored in `dtype`."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * dtype.itemsize * tokens


@contextmanager
def cpu_vllm_generation(output_dir: str):
    """GRPOTrainer.__init__ builds CPUVLLMGeneration instead of TRL's VLLMGeneration, whose weight sync needs CUDA.
    TRL constructs it inline in GRPOTrainer.__init__, with no method to override, so the class it names is swapped
    for that call only (train_grpo.py enters this only when the trainer runs on the CPU)."""
    import trl.trainer.grpo_trainer as trl_grpo

    trl_class = trl_grpo.VLLMGeneration
    trl_grpo.VLLMGeneration = partial(CPUVLLMGeneration, weights_dir=os.path.join(output_dir, "vllm_weights"))
    try:
        yield
    finally:
        trl_grpo.VLLMGeneration = trl_class
