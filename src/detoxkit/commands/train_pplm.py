"""`detoxkit train pplm-head: PPLM's attribute head. (Being written this session.)"""


def register(targets) -> None:
    return None
