"""Data: the standard dataset files and their downloads (:mod:`.datasets`), Split benchmarks cut from them
(:mod:`.split`), and the user's own files for the nightly model (:mod:`.user`: .npz, CSV, image folders)."""
