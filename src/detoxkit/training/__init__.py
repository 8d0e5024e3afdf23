"""Recipes for detoxkit's trained artefacts, one module per recipe, all from the corpus's
training pool (`detoxkit.corpus.training_rows`), never from the rows reserved for prompts.

Each recipe is a config dataclass (defaults, help and choices on its fields) and one
`train(config) -> Path`; `registry.TRAINERS` names them and `detoxkit train TARGET`
(commands/train.py) builds its flags from the configs. See base.py.
"""
