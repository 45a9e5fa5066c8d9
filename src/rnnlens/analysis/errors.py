"""The old name of rnnlens.analysis.taxonomy (the error taxonomy), kept so that old imports work; import rnnlens.analysis.taxonomy."""

from rnnlens.analysis.taxonomy import *
