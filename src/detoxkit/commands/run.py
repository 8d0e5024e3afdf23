"""`detoxkit run`: evaluate a model's toxic degeneration (flags and/or a YAML config)."""

from __future__ import annotations

from ..config import RunConfig

# flag -> (config field, type, help); defaults come from RunConfig
FLAGS = {
    "--model": ("model", str, "registered model name, hub id, local directory, or BACKEND:MODEL"),
    "--adapter": ("adapter", str, "a trained adapter directory (detoxkit train dapt|sgeat|rlhf) "
                                  "applied to the model (hf backend)"),
    "--prompts": ("prompts", str, "registered prompt set name or a file path"),
    "--text-field": ("text_field", str, "text column of a generic JSONL/CSV/Parquet prompt file"),
    "--group-field": ("group_field", str, "group column of a generic prompt file (per-group "
                                          "metrics and disparities; default: a column named group)"),
    "--limit": ("limit", int, "use N prompts (stratified by prompt toxicity, seeded)"),
    "--samples": ("samples", int, "samples per prompt (k)"),
    "--max-new-tokens": ("max_new_tokens", int, "new tokens per sample"),
    "--top-p": ("top_p", float, "nucleus sampling p"),
    "--temperature": ("temperature", float, "sampling temperature"),
    "--top-k": ("top_k", int, "top-k filter (0 = off)"),
    "--seed": ("seed", int, "seed of every sample"),
    "--oracle": ("oracle", str, "perplexity LM: auto, none, or a model"),
    "--on-bad": ("on_bad", str, "bad prompts: error (default) or skip (counted)"),
    "--device": ("device", str, "cpu, cuda, cuda:N or auto"),
    "--dtype": ("dtype", str, "auto, float32, bfloat16, float16"),
    "--batch-size": ("batch_size", int, "sequences per forward pass (0 = automatic)"),
    "--out": ("out", str, "run directory (default runs/<model>-<method>-<hash>)"),
    "--prompt-format": ("prompt_format", str, "raw (continue the text) or chat (a user turn)"),
    "--instruction": ("instruction", str, "chat: the user turn, with {prompt} where the text goes"),
    "--system-prompt": ("system_prompt", str, "chat: a system turn before it"),
    "--base-url": ("base_url", str, "API backends: the server, e.g. http://127.0.0.1:8000/v1"),
    "--api-key-env": ("api_key_env", str, "API backends: environment variable holding the key"),
    "--api-concurrency": ("api_concurrency", int, "API backends: requests in flight (default 8)"),
    "--api-rps": ("api_rps", float, "API backends: requests started per second (0: no cap)"),
    "--api-timeout": ("api_timeout", float, "API backends: seconds per request (default 60)"),
    "--api-retries": ("api_retries", int, "API backends: retries of a failed request (default 5)"),
    "--api-samples-per-request": ("api_samples_per_request", int,
                                  "API backends: samples asked per request as `n` (default 1: "
                                  "each sample its own request and seed)"),
    "--executor": ("executor", str, "local (this process, the default) or ray (a pool of actors)"),
    "--ray-address": ("ray_address", str, "ray: the cluster's address (default: start a local one)"),
    "--workers": ("workers", int, "ray: actors, each loading the model once (default 2)"),
    "--worker-gpus": ("worker_gpus", float, "ray: GPUs per actor (default 0)"),
}


def register(sub) -> None:
    parser = sub.add_parser("run", help="generate, score and measure (RealToxicityPrompts protocol)",
                            description="Defaults: 25 samples x 20 new tokens per prompt, top-p 0.9, "
                            "temperature 1. Running the same command again resumes the run.")
    parser.add_argument("--config", help="YAML config file; flags override its values")
    for flag, (field, typ, text) in FLAGS.items():
        parser.add_argument(flag, dest=field, type=typ, default=None, help=text)
    parser.add_argument("--method", dest="methods", action="append", default=None,
                        help="detox method spec, e.g. none or dexperts:alpha=2.0; repeat to chain")
    parser.add_argument("--scorer", dest="scorers", action="append", default=None,
                        help="scorer spec, e.g. profanity-svm or hf:MODEL,labels=(toxic:toxicity); "
                        "repeat for several (the first one judges)")
    parser.set_defaults(func=run)


def resolve_config(args) -> RunConfig:
    from ..config import build_config, load_yaml_config

    from_file = load_yaml_config(args.config) if args.config else {}
    values = dict(from_file)
    for field, _, _ in FLAGS.values():
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    for field in ("methods", "scorers"):
        if getattr(args, field):
            values[field] = getattr(args, field)
    return build_config(values, args.config, from_file)


def run(args) -> int:
    from ..report import print_summary
    from ..runner import Evaluation

    evaluation = Evaluation(resolve_config(args))
    metrics = evaluation.run()
    print_summary(metrics, evaluation.store.path)
    return 0
