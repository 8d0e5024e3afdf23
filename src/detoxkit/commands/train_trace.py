"""`detoxkit train hmm|trace-classifier: TRACE's HMM and its token-factorised attribute classifiers. (Being written this session.)"""


def register(targets) -> None:
    return None
