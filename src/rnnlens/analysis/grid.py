"""The old name of rnnlens.analysis.grid_results (the grid's Table 1 and model map), kept so that old imports work; import rnnlens.analysis.grid_results."""

from rnnlens.analysis.grid_results import *
