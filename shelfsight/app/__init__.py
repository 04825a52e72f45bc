"""The application layer, above every side: the `shelfsight` command line (`cli`), the
end-to-end demo (`demo`) and `eval`, which dispatches between a bundle (edge runtime) and
a training run (Keras). The core, edge, training and export import nothing from here."""
