"""The device commands (`classify`, `run`, `index`, `enroll`, `search`, `sync`): click
parsing only; each calls into the packages beside this one."""
