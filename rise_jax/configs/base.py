"""Fields shared by every config; model configs start from :func:`get_base_config`."""

import ml_collections

from rise_jax.evaluation.translation import DEFAULT_TEMPLATE as DEFAULT_TRANSLATION_TEMPLATE
from rise_jax.training.options import config_defaults as train_option_defaults


def data_source(**overrides) -> ml_collections.ConfigDict:
    """One text source (rise_jax/data/sources.py documents every kind): the section shape shared by
    ``data`` (replay) and ``train.data`` (training); ``SourceSpec.from_config`` reads it."""
    c = ml_collections.ConfigDict()
    c.source = "flores"  # plain_text | mgsm | squad | flores | ntrex | hf | opencompass | generations
    c.path = ""  # directory or file ({lang}/{flores}/{tydiqa} placeholders where relevant)
    c.split = "dev"
    c.max_samples = 0  # per language; 0 = all
    c.max_length = 512  # tokens; longer sequences are truncated and counted
    c.template = "raw"  # raw | chat
    c.include_answer = False  # QA/MGSM: append the answer to the text
    c.hf_path = ""  # Hugging Face dataset id (source = hf)
    c.hf_name = ""
    c.hf_data_files = ""
    c.text_fields = "text"
    c.hf_filter = ""  # "column:prefix" filter, e.g. "id:{tydiqa}-"
    c.answer_field = ""  # hf: e.g. "answers.text.0" for prompt/answer (QA) examples
    c.prompt_only = False  # opencompass / generations: replay prompts without the model's outputs
    c.update(overrides)
    return c


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 42
    # Comma-separated, run in pipeline order; a stage whose artefact was made from the same
    # relevant config is skipped (the run resumes); `force` redoes them.
    c.stages = "stats,analyze,select,train,export,eval,report"
    c.force = False
    # Earlier results of a stage kept under .rise/kept/ (by fingerprint) after a new one completes;
    # a rerun whose config matches a kept result restores it instead of recomputing.
    c.keep_results = 1

    c.model = ml_collections.ConfigDict()
    c.model.checkpoint = ""  # HF checkpoint directory or hub id ("{workdir}/pretrain/checkpoint": pretrained here)
    c.model.dtype = "bfloat16"  # parameter dtype: bfloat16 | float32
    # Frozen weights stored as int8 | float8_e4m3fn, per output channel, dequantised where used;
    # "" = as loaded (model.dtype). Export always merges into the source checkpoint's own weights.
    c.model.frozen_dtype = ""
    c.model.frozen_groups = "experts,mlp,lm_head"  # which frozen kernels; add "attention" for q/k/v/o
    c.model.dispatch = "auto"  # MoE dispatch: auto | blocked | ragged | grouped_scan | dense
    c.model.tokenizer = ""  # tokenizer directory (default: the checkpoint's)

    # Device mesh when more than one device is visible (rise_jax/sharding.py): data x model;
    # model = 0 takes every device not used by data. Experts are split whole over `model`;
    # expert_parallel runs each device's own experts and exchanges tokens (rise_jax/models/
    # expert_parallel.py); False leaves the dispatch to XLA (it then all-gathers expert weights).
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = 1
    c.mesh.model = 0
    c.mesh.expert_parallel = True

    # Pretraining a small MoE here (stage `pretrain`, first; not in the default stages): the demo's
    # model and the controlled testbed's (rise_jax/testbed/pretrain.py, PretrainOptions).
    c.pretrain = ml_collections.ConfigDict()
    c.pretrain.corpus = "demo"  # demo (six real languages) | cipher (synthetic languages of one base corpus)
    c.pretrain.languages = ""  # cipher: language codes, e.g. "qaa,qab,qac" (ISO 639 private use)
    c.pretrain.shared = ""  # cipher: share of the base vocabulary each keeps, e.g. "1,0,0.5" (1 = the base)
    c.pretrain.mix = ""  # cipher: mix weight of each in the pretraining batches, e.g. "100,10,1"
    c.pretrain.vocab_size = 768  # demo: BPE vocabulary size (a cipher corpus: one token per word)
    c.pretrain.hidden_size = 64
    c.pretrain.num_layers = 8
    c.pretrain.num_experts = 16
    c.pretrain.top_k = 4
    c.pretrain.moe_intermediate_size = 48
    c.pretrain.steps = 300
    c.pretrain.batch_size = 32
    c.pretrain.max_length = 40
    c.pretrain.lr = 3e-3
    c.pretrain.balance_weight = 0.0025  # Switch load-balancing loss weight (HF router_aux_loss_coef)
    c.pretrain.z_loss_weight = 0.0  # ST-MoE router z-loss weight
    c.pretrain.save_steps = ""  # steps whose HF checkpoints are kept in pretrain/steps/<step>
    c.pretrain.save_every = 100  # resumable state every this many steps
    c.pretrain.seed = 0
    c.pretrain.max_steps = 0  # stop after this many steps in one run (0 = none; a rerun resumes)
    c.pretrain.progress = True

    # The testbed study over the pretrained checkpoints (python -m rise_jax.study, rise_jax/study.py).
    c.study = ml_collections.ConfigDict()
    c.study.stages = "stats,analyze,select"  # run on every checkpoint pretrain saved
    c.study.overlap_level = 0.5  # report the first step a low-resource language's overlap is below it

    c.inspect = ml_collections.ConfigDict()
    c.inspect.load_weights = True  # load (and so validate) every tensor
    c.inspect.save_params = False  # also save the converted params with orbax to <workdir>/params

    # Text replayed for routing statistics.
    c.data = data_source()
    c.data.languages = "en,bn,sw,te,th,zh,de,fr,ru,ja"
    c.data.parallel = False  # line i is the same sentence in every language (flores/ntrex always are)

    c.stats = ml_collections.ConfigDict()
    c.stats.batch_size = 8
    c.stats.bucket_multiple = 32  # pad lengths to a multiple of this (few compiled shapes)
    # Several sequences a row (segment ids, rise_jax/data/batching.py packed_batches): padding-free
    # and equal to the unpacked replay, so on by default and not part of the stage's fingerprint.
    c.stats.pack = True
    c.stats.divergence = True  # keep per-sequence router distributions on parallel sources

    c.analyze = ml_collections.ConfigDict()
    c.analyze.reference = "en"
    c.analyze.global_top_n = 30
    c.analyze.layer_top_n = 0  # 0 = top-k of the model
    # The low-resource group ("bn,sw") for the within/between-group overlap and the report; empty:
    # rise_jax/data/languages.py's table. (Here, not under data: relabelling must not re-replay.)
    c.analyze.low_resource = ""

    # Task experts vs multilingual experts (stage `task_experts`, after analyze; not in the default
    # stages): the task corpus replayed and compared with analyze.reference's general text.
    c.task_experts = ml_collections.ConfigDict()
    c.task_experts.data = data_source(source="mgsm", split="test", max_samples=250)  # e.g. MGSM questions
    c.task_experts.language = "en"  # the task corpus's language
    c.task_experts.taus = "0.05,0.1,0.2,0.3,0.4,0.5"

    # Performance vs routing alignment (stage `correlate`, after eval; not in the default stages:
    # it needs >= 3 non-English languages scored and parallel replay text).
    c.correlate = ml_collections.ConfigDict()
    c.correlate.tasks = ""  # eval task names; empty = every task in eval/results.json
    c.correlate.variant = "base"
    # Tasks whose primary metrics are averaged per language into one more row, "mean" (over the
    # languages all of them scored); "all" = every task correlated; empty = none.
    c.correlate.mean = ""
    c.correlate.layers = ""  # MoE layers, e.g. "8-35"; empty = the middle zone

    # Other ways of adapting the model, trained and evaluated beside this run (stage `arms`,
    # after eval; not in the default stages): the points of a sweep of configs/sweeps.py, e.g.
    # routing_alignment (RISE vs RISE + alignment vs routers + alignment vs steering). The report
    # sets them side by side.
    c.arms = ml_collections.ConfigDict()
    c.arms.sweep = ""  # a sweep name (rise_jax/configs/sweeps.py)
    c.arms.eval_run = ""  # the arms' eval tasks (each also in eval.run); empty = eval.run

    c.select = ml_collections.ConfigDict()
    c.select.method = "rise"  # rise | random | topk | esft_gate | esft_token | esft_json
    c.select.target = "bn"
    c.select.k = 128
    c.select.ratios = (0.35, 0.25, 0.40)  # shallow, middle, deep
    c.select.alpha = 10.0
    c.select.zones = "shallow,middle,deep"  # layer-group ablations drop zones
    # Zone boundaries (rise_jax/zones.py): shallow and middle fractions of the MoE layers, deep the
    # rest; L1 = round(0.375 L), L2 = round(0.625 L) as in the reference code. Analysis uses them too.
    c.select.zone_ratios = (0.375, 0.25)
    c.select.seed = 42
    c.select.p_gate = 0.1
    c.select.p_token = 0.2
    c.select.esft_config = ""  # method esft_json: an ESFT expert-config JSON (rise_jax/selection/esft_config.py)

    # Subnetwork training. The training options (epochs, batch_size, grad_accum, lr, warmup_ratio,
    # b1, b2, eps, weight_decay, clip_norm, seed, eval_every, save_every, log_every, bucket_multiple,
    # max_steps, extra_lr, extra_trainable, method and the lora_* settings) and their defaults come
    # from rise_jax/training/options.py.
    c.train = ml_collections.ConfigDict(train_option_defaults())
    c.train.language = ""  # default: the selection's target language
    c.train.data = data_source(split="train")  # the target language's text
    c.train.completion_only = False  # loss on the answer only (QA / MGSM data)
    c.train.held_out = 0.05  # fraction of sequences for the held-out loss
    c.train.compute_dtype = ""  # default: the parameter dtype (bf16 compute, fp32 expert masters)
    c.train.remat = True
    c.train.router_mode = "deterministic"  # PhiMoE: or sparsemixer_train

    # Evaluation: the tasks named in `run`, for every variant (rise_jax/stages/evaluate.py).
    c.eval = ml_collections.ConfigDict()
    c.eval.variants = "base,trained"  # base | trained | pruned | trained_pruned | steered
    c.eval.baseline = "base"  # the row deltas are taken against
    c.eval.run = "mgsm,tydiqa,perplexity"  # names of entries in eval.tasks
    # Default for tasks without their own list; "replay" (here or in a task's languages) = the
    # replayed languages (data.languages) the task's dataset has (rise_jax/evaluation/coverage.py).
    c.eval.languages = "bn,en"
    c.eval.max_samples = 0  # per task and language; 0 = all (a task's own max_samples wins)
    c.eval.batch_size = 8
    c.eval.decode_slots = 0  # generation's continuous-batching slots; 0 = what a 2 GiB KV cache holds (<= 16)
    c.eval.progress = True
    c.eval.steer = ml_collections.ConfigDict()
    # Which experts the `steered` variant touches: experts | language | task_experts (per-layer task
    # sets of the task_experts stage at `tau`) | multilingual | random (ablations); empty = experts,
    # or language when `language` is set.
    c.eval.steer.source = ""
    c.eval.steer.experts = ""  # "3,17": expert indices steered in every layer of `layers`
    c.eval.steer.language = ""  # or: steer this language's experts (frequency - mean of others > tau)
    c.eval.steer.tau = 0.1
    c.eval.steer.layers = ""  # "0-11" or "4,5"; empty = all MoE layers
    c.eval.steer.mode = "soft"  # soft: z += strength * std(z); hard: z = max(z) + eps; deactivate: z = min(z) - eps
    c.eval.steer.strength = 1.0
    c.eval.tasks = ml_collections.ConfigDict()
    c.eval.tasks.mgsm = ml_collections.ConfigDict(
        dict(kind="mgsm", path="", languages="", shots=0, template="chat", max_new_tokens=256, max_samples=0)
    )
    c.eval.tasks.tydiqa = ml_collections.ConfigDict(
        dict(
            kind="qa",
            path="",  # SQuAD-format JSON; {lang}/{tydiqa} placeholders for one file per language
            languages="",
            template="chat",
            prompt_template="",  # with {context} and {question}; empty = the built-in English one
            max_prompt_length=2048,  # tokens; longer prompts are skipped or truncated (counted)
            long_prompts="truncate",  # skip | truncate
            max_new_tokens=32,
            max_samples=0,  # per language; 0 = eval.max_samples (every task has this field)
        )
    )
    c.eval.tasks.perplexity = ml_collections.ConfigDict(
        dict(
            kind="perplexity",
            source="flores",
            path="",
            split="test",
            languages="",
            max_length=512,
            window="truncate",  # or "rolling": lm-eval's loglikelihood_rolling (every token, no cut)
            max_samples=0,
        )
    )
    c.eval.tasks.multiple_choice = ml_collections.ConfigDict(  # our JSONL; path with {lang}
        dict(kind="multiple_choice", format="jsonl", path="", subjects="", languages="", max_samples=0)
    )
    # The paper's general-ability tasks (Table 4), read from their published files
    # (rise_jax/evaluation/formats.py; English): run them with e.g.
    # --config.eval.run=mgsm,triviaqa,mmlu --config.eval.tasks.mmlu.path=data/mmlu/test
    c.eval.general = ""  # tasks shown side by side in Table 4's layout (before -> after, Δ)
    c.eval.tasks.triviaqa = ml_collections.ConfigDict(  # qa/verified-web-dev.json or trivia_qa rows
        dict(
            kind="open_qa",
            format="triviaqa",
            path="",
            languages="en",
            template="chat",
            prompt_template="",  # with {question}; empty = "Question: {question}\nAnswer:"
            max_new_tokens=32,
            max_samples=0,
        )
    )
    for name, fmt, subjects in (
        ("mmlu", "mmlu", ""),  # the directory of <subject>_test.csv, or cais/mmlu rows
        ("mmlu_medical", "mmlu", "medical"),  # the companion study's MMLU-Medical (6 subjects)
        ("arc_challenge", "arc", ""),  # ARC-Challenge-Test.jsonl or allenai/ai2_arc rows
        ("hellaswag", "hellaswag", ""),  # hellaswag_val.jsonl or Rowan/hellaswag rows
    ):
        c.eval.tasks[name] = ml_collections.ConfigDict(
            dict(kind="multiple_choice", format=fmt, path="", subjects=subjects, languages="en", max_samples=0)
        )
    # Belebele (facebook/belebele): the directory of its per-language <flores>.jsonl files.
    c.eval.tasks.belebele = ml_collections.ConfigDict(dict(kind="belebele", path="", languages="", max_samples=0))
    # Multilingual multiple choice, contexts as lm-eval 0.4.13 builds them
    # (rise_jax/evaluation/multilingual_mc.py): path = one language's file of the published
    # rows, with {lang} (ISO code), {flores} or {name} (English name; INCLUDE's subsets).
    # subjects: Global-MMLU's subjects, categories (STEM, Medical...) or CS / CA; INCLUDE's domains.
    # xnli: the published xnli.test.tsv (every language in one file) or facebook/xnli rows.
    for name in ("global_mmlu", "include", "global_piqa", "xcopa", "xnli", "xstorycloze"):
        c.eval.tasks[name] = ml_collections.ConfigDict(
            dict(
                kind="multiple_choice",
                format=name,
                path="",
                subjects="",
                shots=0,  # exemplars of the item's subject from fewshot_path (lm-eval's first_n)
                fewshot_path="",
                languages="",
                max_samples=0,
            )
        )
    # FLORES-200 translation, both directions with English (rise_jax/evaluation/translation.py):
    # the prompt is stated here; the first line of the output is scored by sacrebleu's chrF++ and
    # BLEU, their signatures in the results.
    for name, direction in (("flores_en_xx", "en-xx"), ("flores_xx_en", "xx-en")):
        c.eval.tasks[name] = ml_collections.ConfigDict(
            dict(
                kind="translation",
                direction=direction,
                source="flores",  # any parallel source whose sentence ids align (flores, ntrex)
                path="",
                split="test",
                shots=0,  # pairs from fewshot_split before the sentence
                fewshot_split="dev",
                languages="",
                template="chat",
                prompt_template=DEFAULT_TRANSLATION_TEMPLATE,
                bleu_tokenize="",  # empty = sacrebleu's default for the target language (13a, zh...)
                max_new_tokens=128,
                max_samples=0,
            )
        )
    # PolyMath (rise_jax/evaluation/polymath.py): path = a language's directory of the level files
    # (Qwen/PolyMath <lang>/{low,medium,high,top}.parquet, or the GitHub data/<lang>/*.jsonl), {lang}.
    # Scored by the first \boxed{} of the output; primary metric the difficulty-weighted accuracy.
    c.eval.tasks.polymath = ml_collections.ConfigDict(
        dict(
            kind="polymath",
            format="polymath",
            path="",
            subjects="",  # levels to keep (low, medium, high, top); empty = all four
            languages="",
            template="chat",
            prompt_template="",  # with {question} and {instruction}; empty = "{question}\n\n{instruction}"
            max_new_tokens=2048,
            max_samples=0,  # per level
        )
    )
    # MMLU-ProX as lm-eval 0.4.13's mmlu_prox (rise_jax/evaluation/mmlu_prox.py): path = one
    # language's test rows of li-lab/MMLU-ProX (or -Lite), fewshot_path its validation rows.
    c.eval.tasks.mmlu_prox = ml_collections.ConfigDict(
        dict(
            kind="mmlu_prox",
            format="mmlu_prox",
            path="",
            fewshot_path="",
            subjects="",  # categories to keep (biology, ..., computer_science, ...); empty = all 14
            shots=5,
            languages="",
            template="raw",  # lm-eval's default: no chat template
            max_new_tokens=2048,
            max_samples=0,
        )
    )
    # Routing divergence from English on parallel text, on each variant's own weights and router
    # edits (rise_jax/evaluation/routing_alignment.py): the companion study's middle-layer measure
    # before (base) and after (trained, steered). Lower = closer to English.
    c.eval.tasks.routing_divergence = ml_collections.ConfigDict(
        dict(
            kind="routing_divergence",
            source="flores",  # any parallel source whose sentence ids align (flores, ntrex, plain_text)
            path="",
            split="dev",
            reference="en",
            layers="",  # MoE layers averaged ("3-5"); empty = the middle zone
            max_length=512,
            languages="",
            max_samples=0,
        )
    )
    return c
