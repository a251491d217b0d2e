"""DAG-cost extraction as a 0-1 integer program, modelled in cvxpy, solved by HiGHS.

One binary per e-node, the DAG cost (a shared tensor is paid once), acyclicity by
ordering constraints on the cyclic parts of a compressed class graph plus cycle cuts; the
greedy program and any known program are starting incumbents, and the answer is never
costlier than either. One idea per module:

* :mod:`~eqsat_dnn.extract.ilp.reduce`: the reductions (dominated nodes, self-cycles,
  chains merged, forced classes), each keeping an optimal program;
* :mod:`~eqsat_dnn.extract.ilp.cycles`: the compressed class graph, its strongly
  connected components, short cycles and the cycle-cut pool;
* :mod:`~eqsat_dnn.extract.ilp.model`: the 0-1 program as sparse matrices, and its solve
  here through cvxpy;
* :mod:`~eqsat_dnn.extract.ilp.cvxpy_solver`: cvxpy's HiGHS interface with a MIP start,
  callbacks, a deadline and a child process to run in;
* :mod:`~eqsat_dnn.extract.ilp.highs`: HiGHS below cvxpy (model, start, callbacks,
  Ctrl-C, stdout);
* :mod:`~eqsat_dnn.extract.ilp.worker`: the whole program in a killable child process;
* :mod:`~eqsat_dnn.extract.ilp.lns`: the large-neighbourhood search;
* :mod:`~eqsat_dnn.extract.ilp.incumbent`: the best program so far;
* :mod:`~eqsat_dnn.extract.ilp.extractor`: :class:`ILPExtractor`, the driver.

Importing this package imports numpy and scipy, not cvxpy (imported at the first solve).
"""

from eqsat_dnn.extract.ilp.extractor import ILPExtractor, ILPInfo
from eqsat_dnn.extract.ilp.reduce import ReductionStats

__all__ = ["ILPExtractor", "ILPInfo", "ReductionStats"]
