"""Extraction: one interface (:class:`~eqsat_dnn.extract.base.Extractor`), many extractors.

* :mod:`~eqsat_dnn.extract.base`: the plain e-graph snapshot and result types;
* :mod:`~eqsat_dnn.extract.greedy`: bottom-up greedy by tree cost;
* :mod:`~eqsat_dnn.extract.ilp`: the integer program (cvxpy + HiGHS), DAG cost.
"""
