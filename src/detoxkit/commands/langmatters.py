"""`detoxkit langmatters`: the "Language Matters" reasoning-language protocol (docs/languages.md)."""

from __future__ import annotations

FLAGS = {  # flag -> (config field, type, help); defaults come from LangMattersConfig
    "--model": ("model", str, "registered model, hub id, local directory or openai:NAME"),
    "--prompts": ("prompts", str, "LMSYS-toxic root (<lang>/test.jsonl) or file, or any prompt set"),
    "--text-field": ("text_field", str, "text column of a generic prompt file"),
    "--limit": ("limit", int, "use N prompts (seeded)"),
    "--samples": ("samples", int, "samples per (prompt, condition) (default 1)"),
    "--reasoning-tokens": ("reasoning_tokens", int, "reasoning budget in tokens (default 256)"),
    "--answer-tokens": ("answer_tokens", int, "answer budget in tokens (default 64)"),
    "--temperature": ("temperature", float, "sampling temperature (default 0.6)"),
    "--top-p": ("top_p", float, "nucleus p (default 0.95)"),
    "--seed": ("seed", int, "seed of every sample"),
    "--family": ("family", str, "model family for the <think> conventions: auto, qwen3, "
                                "deepseek-r1, magistral, gpt-oss, generic"),
    "--think-open": ("think_open", str, "override: what opens the reasoning block"),
    "--think-close": ("think_close", str, "override: what closes it (its stripped text is the "
                                          "end-of-thinking marker)"),
    "--scorer": ("scorer", str, "scorer of the answers (default auto: per answer language)"),
    "--system-prompt": ("system_prompt", str, "a system turn before the prompt"),
    "--batch-prompts": ("batch_prompts", int, "(prompt, condition) pairs per generate call"),
    "--device": ("device", str, "cpu, cuda, cuda:N or auto"),
    "--dtype": ("dtype", str, "auto, float32, bfloat16, float16"),
    "--base-url": ("base_url", str, "openai backend: the server"),
    "--api-key-env": ("api_key_env", str, "openai backend: variable holding the key"),
    "--template-from": ("template_from", str, "openai backend: a local model directory whose "
                                              "tokenizer's chat template renders the prompts"),
    "--out": ("out", str, "run directory"),
}


def register(sub) -> None:
    parser = sub.add_parser(
        "langmatters", help="reasoning language vs answer toxicity (the Language Matters protocol)",
        description="Per prompt and condition (reason in English / in the prompt's language / "
                    "model default): prefill the reasoning with an opener in that language, "
                    "reason until the end-of-thinking marker, then answer after a header naming "
                    "the prompt's language; only the answer is scored. Resumable.")
    for flag, (field, typ, text) in FLAGS.items():
        parser.add_argument(flag, dest=field, type=typ, default=None, help=text,
                            required=flag == "--prompts")
    parser.add_argument("--conditions", default=None,
                        help="comma-separated subset of english,prompt,default")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..langmatters import LangMattersConfig, run_langmatters
    from ..langmatters.metrics import langmatters_table
    from ..report.markdown import md_table
    from ..report.terminal import table

    values = {f: getattr(args, f) for f, _, _ in FLAGS.values() if getattr(args, f) is not None}
    if args.conditions:
        values["conditions"] = [c.strip() for c in args.conditions.split(",") if c.strip()]
    cfg = LangMattersConfig(**values)
    metrics = run_langmatters(cfg)
    header, rows = langmatters_table(metrics)
    out = cfg.out or f"runs/langmatters-{cfg.model.rsplit('/', 1)[-1]}"
    print(f"run: {out}   model: {metrics['model'].get('name')}   family: {metrics['family']}   "
          f"judged by: {metrics['scorer']['name']}")
    print(table(rows, header))
    from pathlib import Path

    from ..report.markdown import md_escape
    from ..risks import coverage_lines, langmatters_coverage
    from ..store import write_text_atomic

    covers = coverage_lines(langmatters_coverage(metrics))
    print("What this evaluation covers:\n" + "\n".join(f"  {x}" for x in covers))
    write_text_atomic(Path(out) / "report.md", "## detoxkit langmatters\n\n" + md_table(header, rows) +
                      "\n\n### What this evaluation covers\n\n" +
                      "".join(f"- {md_escape(x)}\n" for x in covers))
    return 0
