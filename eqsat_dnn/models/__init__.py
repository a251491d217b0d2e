"""Models built in code: the benchmark zoo (:mod:`.zoo`), the bundled example
(:mod:`.examples`), transformer blocks for the partitioner (:mod:`.blocks`) and real torch
exports (:mod:`.exports`)."""
