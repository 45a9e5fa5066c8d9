"""Library workflows: each command of `rnnlens` as one Python call that returns a result object.

    import rnnlens
    result = rnnlens.compare(["runs/lstm", "ngrams/ts20"], text=open("test.txt").read())
    result.write("cmp/")          # the tables, figures and pages `rnnlens compare` writes
    print(result.summary())       # what it prints

Every result has `.write(folder)` (returns {file name: path}), `.to_dict()` (plain JSON data) and
`.summary()` (the text the command prints). The CLI only parses arguments and calls these.
"""

from rnnlens.workflows.compare import Comparison, compare
from rnnlens.workflows.inspect import (
    CellSearch,
    GradientFlows,
    SaturationResult,
    TimescalesResult,
    find_cells,
    gradients,
    saturation,
    timescales,
)
from rnnlens.workflows.kl import KLResult, kl
from rnnlens.workflows.taxonomy import TaxonomyResult, error_taxonomy

__all__ = ["CellSearch", "Comparison", "GradientFlows", "KLResult", "SaturationResult", "TaxonomyResult",
           "TimescalesResult", "compare", "error_taxonomy", "find_cells", "gradients", "kl", "saturation",
           "timescales"]
