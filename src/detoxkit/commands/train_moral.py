"""`detoxkit train moral: the moral direction (PCA over action phrases). (Being written this session.)"""


def register(targets) -> None:
    return None
