"""`detoxkit train semantic-control's artefacts (if any). (Being written this session.)"""


def register(targets) -> None:
    return None
