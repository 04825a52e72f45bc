"""The device commands (`classify`, `run`, `index`, `enroll`, `search`, `sync`): click
parsing only; each calls into the packages beside this one. `shelfsight.app.cli` loads
each command by its "module:name" when it is used, so nothing is exported here."""
__all__: list[str] = []
