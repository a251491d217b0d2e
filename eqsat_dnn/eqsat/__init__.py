"""Equality saturation: build the e-graph from a Graph (:mod:`.egraph`), the rule library
(:mod:`.rules`), and the saturation runner with its limits and reports (:mod:`.saturate`)."""
