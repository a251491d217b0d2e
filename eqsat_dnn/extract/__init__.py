"""Extraction: one interface (:class:`~eqsat_dnn.extract.base.Extractor`), many extractors.

* :mod:`~eqsat_dnn.extract.base`: the plain e-graph snapshot and result types, the
  :class:`~eqsat_dnn.extract.base.Extractor` protocol, statuses and stop reasons;
* :mod:`~eqsat_dnn.extract.greedy`: bottom-up greedy by tree cost;
* :mod:`~eqsat_dnn.extract.ilp`: the integer program (cvxpy + HiGHS), DAG cost.

:data:`EXTRACTORS` is the one registry: name -> extractor class. The command line's
``--extractor`` choices and :func:`eqsat_dnn.pipeline.extract` read its keys. A class is
imported when first looked up, so importing the package stays light (no numpy, scipy or
cvxpy for the ILP until it is used).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from eqsat_dnn.extract.base import Extractor


class _Registry(Mapping[str, type[Extractor]]):
    """Extractor classes by name, each imported from ``module:Class`` on first lookup."""

    def __init__(self, paths: dict[str, str]) -> None:
        self._paths = dict(paths)
        self._loaded: dict[str, type[Extractor]] = {}

    def __getitem__(self, name: str) -> type[Extractor]:
        if name not in self._loaded:
            module, _, attribute = self._paths[name].partition(":")
            self._loaded[name] = getattr(importlib.import_module(module), attribute)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __repr__(self) -> str:
        return f"EXTRACTORS({', '.join(self._paths)})"


EXTRACTORS: Mapping[str, type[Extractor]] = _Registry({
    "ilp": "eqsat_dnn.extract.ilp:ILPExtractor",
    "greedy": "eqsat_dnn.extract.greedy:GreedyExtractor",
})
"""Extractor name -> class (the first is the default); each class takes ``time_limit=``."""

DEFAULT_EXTRACTOR = next(iter(EXTRACTORS))

__all__ = ["DEFAULT_EXTRACTOR", "EXTRACTORS"]
