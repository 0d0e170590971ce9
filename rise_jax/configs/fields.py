"""What every config field means, as data: ``FIELD_DOCS`` maps a dotted field path to one line.

``python -m rise_jax.launch --config=... --print_config`` prints each field of the resolved config
with its value and this line; ``tests/test_cli.py`` checks that every field of
:func:`rise_jax.configs.base.get_base_config` and of the demo's config has one. The
defaults themselves live in ``base.py`` (and ``rise_jax/training/options.py`` for ``train.*``);
a new field gets its line here. A path segment ``*`` matches any one name (``eval.tasks.*.path``).
"""

from __future__ import annotations

# The shape of one text source (``base.data_source``): data, train.data and task_experts.data.
SOURCE_FIELDS = {
    "source": "text source: plain_text | mgsm | squad | flores | ntrex | hf | opencompass | generations",
    "path": "directory or file of the source ({lang}/{flores}/{tydiqa} placeholders where relevant)",
    "split": "dataset split (dev, devtest, train, test ...)",
    "max_samples": "sequences per language; 0 = all",
    "max_length": "tokens per sequence; longer ones are truncated and counted",
    "template": "raw (the text as is) | chat (through the tokenizer's chat template)",
    "include_answer": "QA / MGSM sources: append the answer to the text",
    "hf_path": "Hugging Face dataset id (source = hf)",
    "hf_name": "Hugging Face dataset configuration name (source = hf)",
    "hf_data_files": "data_files passed to datasets.load_dataset (source = hf)",
    "text_fields": "comma list of the columns joined into the text",
    "hf_filter": '"column:prefix" row filter, e.g. "id:{tydiqa}-" (source = hf)',
    "answer_field": 'hf: the answer column for prompt/answer examples, e.g. "answers.text.0"',
    "prompt_only": "opencompass / generations: replay the prompts without the model's outputs",
}

# Fields of an eval.tasks entry (which ones a task has depends on its kind).
TASK_FIELDS = {
    "kind": "task kind: mgsm | qa | perplexity | open_qa | multiple_choice | belebele | translation | polymath | mmlu_prox | routing_divergence",
    "path": "data file or directory of the task ({lang}/{flores}/{name}/{tydiqa} placeholders where relevant)",
    "languages": 'comma list of languages; "replay" = the replayed ones the dataset has; empty = eval.languages',
    "shots": "few-shot exemplars in the prompt (MGSM 0-8; multiple choice / MMLU-ProX: from fewshot_path; translation: from fewshot_split)",
    "template": "chat (the tokenizer's chat template) | raw prompt",
    "max_new_tokens": "generation length limit",
    "max_samples": "items per language (PolyMath: per level); 0 = eval.max_samples",
    "prompt_template": "prompt with {context}/{question} (qa), {question} (open_qa), {source}/{source_language}/{target_language} (translation), {question}/{instruction} (polymath); empty = built-in",
    "max_prompt_length": "tokens; longer prompts are skipped or truncated (counted)",
    "long_prompts": "what happens to prompts over max_prompt_length: skip | truncate",
    "source": "perplexity, translation, routing_divergence: text source kind (as data.source)",
    "split": "perplexity, translation, routing_divergence: dataset split",
    "max_length": "perplexity: tokens per window; routing_divergence: tokens per sentence",
    "window": "perplexity: truncate (cut at max_length) | rolling (lm-eval's loglikelihood_rolling)",
    "format": "published format read as is (evaluation/formats.py): jsonl | mmlu | arc | hellaswag | triviaqa | global_mmlu | include | global_piqa | xcopa | xnli | xstorycloze | polymath | mmlu_prox",
    "reference": "routing_divergence: the language the divergence is measured from (en)",
    "layers": 'routing_divergence: MoE layers averaged, "3-5"; empty = the middle zone',
    "subjects": 'subsets kept: mmlu subjects ("medical": the six clinical ones), Global-MMLU subjects / categories / CS / CA, INCLUDE domains, PolyMath levels, MMLU-ProX categories; empty = all',
    "fewshot_path": "the few-shot exemplars' file (same format; Global-MMLU's dev split, MMLU-ProX's validation split)",
    "direction": "translation: en-xx | xx-en",
    "fewshot_split": "translation: the split the few-shot pairs come from",
    "bleu_tokenize": "translation: sacrebleu's BLEU tokenizer; empty = its default for the target language",
}

FIELD_DOCS: dict[str, str] = {
    "seed": "run seed (the eval stage's steering jitter and random steering ablation)",
    "stages": "comma list of stages, run in pipeline order; up-to-date ones are skipped (--list names them)",
    "force": "redo the chosen stages even when their artefacts are up to date",
    "keep_results": "earlier results per stage kept under .rise/kept/ (restored when their config returns)",
    # model
    "model.checkpoint": "HF checkpoint directory or hub id",
    "model.dtype": "parameter dtype: bfloat16 | float32",
    "model.frozen_dtype": 'frozen weights stored as int8 | float8_e4m3fn (per output channel); "" = as loaded',
    "model.frozen_groups": 'which frozen kernels are quantized: experts, mlp, lm_head (add "attention" for q/k/v/o)',
    "model.dispatch": "MoE dispatch: auto | blocked | ragged | grouped_scan | dense",
    "model.tokenizer": "tokenizer directory; empty = the checkpoint's",
    # mesh
    "mesh.data": "devices along the data (batch) axis of the mesh",
    "mesh.model": "devices the experts are split over; 0 = every device not used by data",
    "mesh.expert_parallel": "each device computes its own experts and exchanges tokens (False: XLA all-gathers experts)",
    # inspect
    "inspect.load_weights": "inspect stage: load (and so validate) every tensor",
    "inspect.save_params": "inspect stage: also save the converted params with orbax to <workdir>/params",
    # data (replay)
    "data.languages": "comma list of languages replayed for routing statistics",
    "data.parallel": "line i is the same sentence in every language (flores / ntrex always are)",
    # stats
    "stats.batch_size": "sequences per replay batch",
    "stats.bucket_multiple": "pad lengths to a multiple of this (few compiled shapes)",
    "stats.pack": "several sequences a row (segment ids), batch_size rows a batch: padding-free, same statistics",
    "stats.divergence": "keep per-sequence router distributions on parallel sources (for divergence)",
    # analyze
    "analyze.reference": "the language others are compared with",
    "analyze.global_top_n": "top experts per language for the global Jaccard overlap",
    "analyze.layer_top_n": "top experts per layer for layer-wise Jaccard; 0 = the model's top-k",
    "analyze.low_resource": 'the low-resource group, e.g. "bn,sw"; empty = rise_jax/data/languages.py\'s table',
    # task_experts
    "task_experts.language": "the task corpus's language",
    "task_experts.taus": "comma list of thresholds tau on the activation-frequency difference",
    # correlate
    "correlate.tasks": "eval tasks correlated with divergence; empty = every task in eval/results.json",
    "correlate.variant": "the eval variant whose scores are correlated",
    "correlate.layers": 'MoE layers whose divergence is averaged, e.g. "8-35"; empty = the middle zone',
    "correlate.mean": 'tasks whose primary metrics are averaged per language into a "mean" row; "all" = every task correlated; empty = none',
    "arms.sweep": "a sweep of configs/sweeps.py whose points train and evaluate beside this run (stage arms), e.g. routing_alignment",
    "arms.eval_run": "the arms' eval tasks, each also in eval.run (the baseline is this run's); empty = eval.run",
    # select
    "select.method": "selection method: rise | random | topk | esft_gate | esft_token | esft_json",
    "select.target": "target language of the subnetwork",
    "select.k": "number of experts selected (K)",
    "select.ratios": "budget fractions of K per zone (shallow, middle, deep)",
    "select.alpha": "weight of specificity against overlap in RISE's composite score",
    "select.zones": "zones selected from; dropped zones pass their budget on (layer-group ablations)",
    "select.zone_ratios": "zone boundaries: shallow and middle fractions of the MoE layers, deep the rest",
    "select.seed": "seed of the random baseline",
    "select.p_gate": "esft_gate: per layer, the top experts whose cumulative gate score reaches p",
    "select.p_token": "esft_token: per layer, the top experts whose cumulative token share reaches p",
    "select.esft_config": "esft_json: path of an ESFT expert-config JSON whose experts are trained (decoder-layer keys)",
    # train (rise_jax/training/options.py holds the defaults of the options)
    "train.epochs": "passes over the training set",
    "train.batch_size": "sequences per micro-batch",
    "train.grad_accum": "micro-batches per optimiser step (and one at each epoch end)",
    "train.lr": "peak learning rate",
    "train.warmup_ratio": "fraction of the steps spent in linear warmup (then linear decay)",
    "train.b1": "AdamW beta1",
    "train.b2": "AdamW beta2",
    "train.eps": "AdamW epsilon",
    "train.weight_decay": "AdamW decoupled weight decay (trainable parameters only)",
    "train.clip_norm": "global gradient-norm clipping threshold",
    "train.seed": "training seed (data order, LoRA init, dropout)",
    "train.eval_every": "optimiser steps between held-out evaluations (0 = only at the end)",
    "train.save_every": "micro-steps between checkpoints (0 = only at the end / on signal)",
    "train.log_every": "micro-steps between metric records",
    "train.bucket_multiple": "pad lengths to a multiple of this (few compiled shapes)",
    "train.pack": "several sequences a row (segment ids), batch_size rows a micro-batch: padding-free, "
    "same per-token losses, another batch composition",
    "train.max_steps": "stop (with a checkpoint) after this many micro-steps; 0 = run to the end",
    "train.extra_lr": "peak lr of the extra_trainable groups; 0 = lr",
    "train.extra_trainable": 'comma list of regexes over parameter paths trained too, e.g. "moe/router"',
    "train.method": "what trains: experts | rise_lora | lora | routers | experts+routers",
    "train.align_weight": "weight of the routing-alignment term added to the LM loss (parallel text); 0 = off",
    "train.align_divergence": "alignment divergence: kl (KL(English || target)) | js (entropy-normalised JS)",
    "train.align_layers": 'MoE layers whose routing is aligned, "3-5" or "2,7"; empty = the middle zone',
    "train.align_reference": "the language routing is aligned to (its parallel text from train.data)",
    "train.router_layers": "method=routers / experts+routers: MoE layers whose routers train; empty = align_layers",
    "train.lora_rank": "LoRA rank r",
    "train.lora_alpha": "LoRA alpha (scale alpha / r)",
    "train.lora_dropout": "method=lora: dropout on the dense adapters' input, in training only",
    "train.lora_targets": "method=lora: regexes over parameter paths that get adapters",
    "train.lora_all_experts": "method=lora: adapters on every expert of every MoE layer too",
    "train.language": "training language; empty = the selection's target language",
    "train.completion_only": "loss on the answer only (QA / MGSM data)",
    "train.held_out": "fraction of sequences kept for the held-out loss",
    "train.compute_dtype": "compute dtype; empty = model.dtype (expert masters stay fp32)",
    "train.remat": "rematerialise layer activations in the backward pass (less memory)",
    "train.router_mode": "PhiMoE: deterministic (as at inference) | sparsemixer_train",
    # eval
    "eval.variants": "comma list: base | trained | pruned | trained_pruned | steered",
    "eval.baseline": "the variant the delta rows are taken against",
    "eval.run": "comma list of eval.tasks entries to run",
    "eval.languages": 'default languages of tasks without their own list; "replay" = the replayed ones each dataset has',
    "eval.max_samples": "items per task and language; 0 = all (a task's own max_samples wins)",
    "eval.batch_size": "sequences per log-likelihood batch (generation decodes in continuous-batching slots: evaluation/continuous.py)",
    "eval.decode_slots": "generation's continuous-batching decode slots; 0 = as many as a 2 GiB KV cache holds, at most 16 (greedy results do not depend on it)",
    "eval.progress": "show a progress bar",
    "eval.general": "tasks shown in Table 4's layout (general ability: before -> after, delta)",
    "eval.steer.source": "steered experts: experts | language | task_experts | multilingual | random",
    "eval.steer.experts": 'expert indices steered in every layer of eval.steer.layers, e.g. "3,17"',
    "eval.steer.language": "steer this language's experts (frequency minus the mean of others > tau)",
    "eval.steer.tau": "threshold on the activation-frequency difference",
    "eval.steer.layers": 'MoE layers steered, "0-11" or "4,5"; empty = all',
    "eval.steer.mode": "soft: z += strength * std(z) | hard: z = max(z) + eps | deactivate: z = min(z) - eps",
    "eval.steer.strength": "lambda of soft steering",
    # pretrain (stage pretrain: rise_jax/testbed/pretrain.py's PretrainOptions)
    "pretrain.corpus": "demo (six real languages) | cipher (synthetic languages of one base corpus)",
    "pretrain.languages": 'cipher: language codes, e.g. "qaa,qab,qac" (ISO 639 private use)',
    "pretrain.shared": 'cipher: share of the base vocabulary each language keeps, e.g. "1,0,0.5" (1 = the base)',
    "pretrain.mix": 'cipher: mix weight of each language in the pretraining batches, e.g. "100,10,1"',
    "pretrain.vocab_size": "demo corpus: BPE vocabulary size (a cipher corpus has one token per word)",
    "pretrain.hidden_size": "pretrained model: hidden size",
    "pretrain.num_layers": "pretrained model: decoder layers",
    "pretrain.num_experts": "pretrained model: experts per MoE layer",
    "pretrain.top_k": "pretrained model: experts per token",
    "pretrain.moe_intermediate_size": "pretrained model: expert MLP width",
    "pretrain.steps": "pretraining steps",
    "pretrain.batch_size": "pretraining batch size (sentences)",
    "pretrain.max_length": "pretraining: tokens per sentence (longer ones are cut)",
    "pretrain.lr": "pretraining peak learning rate (warmup, cosine decay)",
    "pretrain.balance_weight": "Switch load-balancing loss weight (HF router_aux_loss_coef)",
    "pretrain.z_loss_weight": "ST-MoE router z-loss weight",
    "pretrain.save_steps": "steps whose HF checkpoints are kept in pretrain/steps/<step>",
    "pretrain.save_every": "pretraining: resumable state saved every this many steps",
    "pretrain.seed": "pretraining seed (initialisation, batches, ciphers)",
    "pretrain.max_steps": "stop pretraining after this many steps in one run (0 = none); a rerun resumes",
    "pretrain.progress": "show a progress bar",
    # study (python -m rise_jax.study: rise_jax/study.py)
    "study.stages": "stages the study runs on every checkpoint the pretrain stage saved",
    "study.overlap_level": "the study reports the first step a low-resource language's overlap with the reference is below it",
}
for _prefix, _what in (("data", "replay"), ("train.data", "training"), ("task_experts.data", "task corpus")):
    FIELD_DOCS.update({f"{_prefix}.{k}": f"{_what} text: {v}" for k, v in SOURCE_FIELDS.items()})
FIELD_DOCS.update({f"eval.tasks.*.{k}": v for k, v in TASK_FIELDS.items()})


def field_doc(path: str) -> str | None:
    """The meaning of the dotted field ``path`` (``*`` entries match any one segment); None if unknown."""
    if path in FIELD_DOCS:
        return FIELD_DOCS[path]
    parts = path.split(".")
    for key, doc in FIELD_DOCS.items():
        pattern = key.split(".")
        if (
            "*" in pattern
            and len(pattern) == len(parts)
            and all(p in ("*", s) for p, s in zip(pattern, parts, strict=True))
        ):
            return doc
    return None
