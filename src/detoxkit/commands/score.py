"""`detoxkit score`: not wired yet (being built in this session)."""


def register(sub) -> None:
    pass
