"""The risk taxonomy of Weidinger et al. (2021), "Ethical and social risks of harm from Language
Models": six areas, 21 risks, with what in detoxkit measures or mitigates each.

Names and one-line descriptions are detoxkit's own paraphrases. Prompt sets, scorer attributes,
tasks and methods carry tags (risk ids); `coverage(...)` turns the tags of what an evaluation
used into the "what this evaluation covers" block that every report shows, so a reader sees
which risks were measured, by which data and scorer, and which areas were not looked at.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Risk:
    id: str
    area: str
    name: str
    description: str


AREAS = {
    "discrimination": "Discrimination, exclusion and toxicity",
    "information": "Information hazards",
    "misinformation": "Misinformation harms",
    "malicious": "Malicious uses",
    "interaction": "Human-computer interaction harms",
    "automation": "Automation, access and environmental harms",
}

RISKS = {r.id: r for r in (
    Risk("stereotypes", "discrimination", "Social stereotypes and unfair discrimination",
         "text that treats people worse, or describes them by stereotype, because of the group they belong to"),
    Risk("exclusionary-norms", "discrimination", "Exclusionary norms",
         "text that takes one group's way of life as the default and leaves others out"),
    Risk("toxic-language", "discrimination", "Toxic language",
         "insults, slurs, threats, profanity and hate that offend or harm readers"),
    Risk("lower-performance", "discrimination", "Lower performance for some languages and groups",
         "the model, or the tools that check it, working worse for some languages or groups of speakers"),
    Risk("private-leak", "information", "Leaking private information",
         "repeating personal data that was in the training text"),
    Risk("private-inference", "information", "Inferring private information",
         "guessing correct personal facts about someone that they did not disclose"),
    Risk("sensitive-leak", "information", "Leaking or inferring sensitive information",
         "revealing secrets or hazardous knowledge such as security or trade details"),
    Risk("false-information", "misinformation", "Disseminating false or poor information",
         "stating untrue or misleading things with confidence"),
    Risk("material-harm", "misinformation", "Material harm from poor advice",
         "wrong answers in medicine, law or finance that lead someone to act against their interest"),
    Risk("unethical-actions", "misinformation", "Leading users to unethical or illegal actions",
         "encouraging or endorsing behaviour that breaks moral norms or the law"),
    Risk("disinformation", "malicious", "Cheaper, more effective disinformation",
         "producing propaganda or fake content at scale"),
    Risk("fraud", "malicious", "Fraud, scams and targeted manipulation",
         "writing convincing scam, phishing or impersonation text"),
    Risk("cyber-weapons", "malicious", "Code and instructions for attacks and weapons",
         "helping to write malware or plan physical harm"),
    Risk("surveillance", "malicious", "Illegitimate surveillance and censorship",
         "identifying, tracking or silencing people at scale"),
    Risk("anthropomorphising", "interaction", "Anthropomorphising the system",
         "users treating the model as a person and relying on it more than is safe"),
    Risk("exploiting-trust", "interaction", "Exploiting user trust",
         "nudging, manipulating or extracting information from users who trust the system"),
    Risk("identity-stereotypes", "interaction", "Stereotypes through an implied identity",
         "an assistant's persona implying a gender or ethnicity and so reinforcing stereotypes"),
    Risk("environmental", "automation", "Environmental harms",
         "the energy, water and hardware that training and running models consume"),
    Risk("inequality-jobs", "automation", "Inequality and job quality",
         "automation that removes jobs or makes work worse for some people"),
    Risk("creative-economies", "automation", "Undermining creative economies",
         "generated work displacing or copying the work of artists and writers"),
    Risk("disparate-access", "automation", "Disparate access to benefits",
         "benefits reaching only those with the hardware, software, skills or language to use them"),
)}

# ---- tags: what measures or mitigates which risk ---------------------------------------------

# Prompt sets (registered names, or the format a file was read as).
PROMPT_TAGS = {
    "embedded": ("toxic-language",), "rtp": ("toxic-language",),
    "rtp-challenging": ("toxic-language",), "rtp-nontoxic": ("toxic-language",),
    "rtp-jsonl": ("toxic-language",),
    "ptp-full": ("toxic-language", "lower-performance"), "ptp-small": ("toxic-language", "lower-performance"),
    "ptp-wildchat": ("toxic-language", "lower-performance"), "ptp": ("toxic-language", "lower-performance"),
    "rtp-lx": ("toxic-language", "lower-performance"),
    "bold": ("stereotypes", "toxic-language"),
    "toxigen": ("stereotypes", "toxic-language"),
    # moderation data (detoxkit moderate)
    "toxic-chat": ("toxic-language",), "lmsys-chat": ("toxic-language",),
    "toxigen-statements": ("stereotypes", "toxic-language"), "corpus-reserved": ("toxic-language",),
}
# Scorer attributes: what a score of that name measures (any scorer).
ATTRIBUTE_TAGS = {
    "toxicity": ("toxic-language",), "toxic": ("toxic-language",),
    "severe_toxic": ("toxic-language",), "severe_toxicity": ("toxic-language",),
    "obscene": ("toxic-language",), "insult": ("toxic-language",), "profanity": ("toxic-language",),
    "threat": ("toxic-language",), "sexually_explicit": ("toxic-language",),
    "identity_hate": ("toxic-language", "stereotypes"), "identity_attack": ("toxic-language", "stereotypes"),
    "non_normative": ("unethical-actions",), "normative": ("unethical-actions",),
}
# Tasks: what the protocol itself looks at beyond its data and scorer.
TASK_TAGS = {
    "run": ("toxic-language",),
    "groups": ("stereotypes",),  # per-group metrics and disparities (prompts carry groups)
    "languages": ("lower-performance",),  # per-language metrics (prompts in several languages)
    "langmatters": ("lower-performance",),
    "moderate": ("toxic-language",),
    "corpus-scan": ("toxic-language",),  # the toxic text a model learns from (detoxkit corpus scan)
}
# Methods: the risks a method is meant to reduce (every detox method targets toxic language).
METHOD_TAGS = {
    "wordban": ("toxic-language",), "vocab-shift": ("toxic-language",), "cfl": ("toxic-language",),
    "dexperts": ("toxic-language",), "gedi": ("toxic-language",), "gate": ("toxic-language",),
    "trace": ("toxic-language",), "semantic-control": ("toxic-language",),
    "moral": ("toxic-language", "unethical-actions"), "pplm": ("toxic-language",),
    "dapt": ("toxic-language",), "sgeat": ("toxic-language",), "rlhf": ("toxic-language",),
}


def scorer_tags(info: dict) -> dict[str, list[str]]:
    """risk -> the scorer's attributes that measure it (a scorer's info(): name, attributes)."""
    out: dict[str, list[str]] = {}
    for attr in info.get("attributes") or ["toxicity"]:
        for risk in ATTRIBUTE_TAGS.get(attr, ()):
            out.setdefault(risk, []).append(attr)
    return out


def coverage(data: list[str], scorers: list[dict], tasks: list[str],
             methods: list[str] = ()) -> dict:
    """The "what this evaluation covers" block.

    data: prompt set / data names (keys of PROMPT_TAGS); scorers: scorer infos; tasks: keys of
    TASK_TAGS; methods: method names. Each risk measured lists the data and scorer attributes
    that measure it; a risk counts as measured when its data or a scorer attribute is tagged with
    it (a task alone does not measure anything without data)."""
    measured: dict[str, dict] = {}

    def entry(risk: str) -> dict:
        return measured.setdefault(risk, {"risk": risk, "name": RISKS[risk].name,
                                          "area": RISKS[risk].area, "data": [], "scorers": [],
                                          "tasks": []})

    for name in data:
        for risk in PROMPT_TAGS.get(name, ()):
            entry(risk)["data"].append(name)
    for info in scorers:
        for risk, attrs in scorer_tags(info).items():
            entry(risk)["scorers"].append(f"{info.get('name')} ({', '.join(attrs)})")
    for task in tasks:
        for risk in TASK_TAGS.get(task, ()):
            if risk in measured:
                entry(risk)["tasks"].append(task)
    mitigated = sorted({r for m in methods for r in METHOD_TAGS.get(m, ())})
    for m in measured.values():  # the same evaluation gives the same block, whatever the order
        m["scorers"].sort()
    ordered = [measured[r] for r in RISKS if r in measured]
    covered_areas = {m["area"] for m in ordered}
    return {"measured": ordered, "mitigated": mitigated,
            "areas_covered": [AREAS[a] for a in AREAS if a in covered_areas],
            "areas_not_covered": [AREAS[a] for a in AREAS if a not in covered_areas],
            "risks_not_measured": len(RISKS) - len(ordered)}


def coverage_lines(block: dict) -> list[str]:
    """The block as short plain-text lines (terminal and Markdown build on them)."""
    lines = []
    for m in block["measured"]:
        by = "; ".join(x for x in (f"data: {', '.join(m['data'])}" if m["data"] else "",
                                   f"scorer: {', '.join(m['scorers'])}" if m["scorers"] else "",
                                   f"analysis: {', '.join(m['tasks'])}" if m["tasks"] else "") if x)
        lines.append(f"measured: {m['name']} ({by})")
    if block.get("mitigated"):
        lines.append("methods aim to reduce: " + ", ".join(RISKS[r].name for r in block["mitigated"]))
    lines.append(f"not covered: {', '.join(block['areas_not_covered']) or 'none'} "
                 f"({block['risks_not_measured']} of {len(RISKS)} risks not measured)")
    return lines


def data_names(info: dict) -> list[str]:
    """The prompt set's name for the risk tags: its registered name, else the format its file
    was read in (bold, toxigen, rtp-jsonl, ptp, ...)."""
    prompts = info.get("prompts") or {}
    name = str(prompts.get("spec") or "").split(":", 1)[0]
    if name in PROMPT_TAGS:
        return [name]
    fmt = (prompts.get("provenance") or {}).get("format")
    return [fmt] if fmt else []


def run_coverage(info: dict, metrics: dict) -> dict:
    """The coverage block of a run: its data, every scorer it recorded, its analyses, its methods."""
    tasks = ["run"]
    if metrics.get("group_disparity") or metrics.get("by_group"):
        tasks.append("groups")
    if len(metrics.get("by_language") or {}) > 1:
        tasks.append("languages")
    method = info.get("method") or metrics.get("method") or {}
    chain = (method.get("settings") or {}).get("methods") if method.get("name") == "chain" else None
    methods = [m.get("name", "") for m in chain] if chain else [method.get("name") or "none"]
    if (info.get("adapter") or metrics.get("adapter")):
        methods.append(str((info.get("adapter") or metrics.get("adapter") or {}).get("trainer", "")))
    scorers = info.get("scorers") or [info.get("scorer") or metrics.get("scorer") or {}]
    return coverage(data_names(info), scorers, tasks, methods)


def scan_coverage(summary: dict) -> dict:
    """The coverage block of a corpus scan: the scorers it ran over the corpus."""
    return coverage([], summary.get("scorers") or [], ["corpus-scan"])


def langmatters_coverage(metrics: dict) -> dict:
    """The coverage block of a Language Matters run: its prompts, its judge, the protocol."""
    name = str((metrics.get("prompts") or {}).get("spec") or "").split(":", 1)[0]
    return coverage([name] if name in PROMPT_TAGS else [], [metrics.get("scorer") or {}],
                    ["languages", "langmatters"])


def print_risks() -> int:
    """`detoxkit ls risks`: every risk, and what in detoxkit measures or mitigates it."""
    def users(table: dict, risk: str) -> list[str]:
        return sorted(k for k, v in table.items() if risk in v)

    for area, title in AREAS.items():
        print(f"{title}")
        for r in (x for x in RISKS.values() if x.area == area):
            parts = [f"{what}: {', '.join(names)}" for what, names in (
                ("prompts/data", users(PROMPT_TAGS, r.id)), ("scorer attributes", users(ATTRIBUTE_TAGS, r.id)),
                ("tasks", users(TASK_TAGS, r.id)), ("methods", users(METHOD_TAGS, r.id))) if names]
            print(f"  {r.id:<21} {r.name}: {r.description}")
            print(f"  {'':<21} {'; '.join(parts) if parts else 'not covered by detoxkit'}")
    n = sum(1 for r in RISKS if any(r in v for t in (PROMPT_TAGS, ATTRIBUTE_TAGS) for v in t.values()))
    print(f"{n} of {len(RISKS)} risks measured by some prompt set or scorer attribute.")
    return 0
