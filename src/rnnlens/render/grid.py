"""The old name of rnnlens.render.grid_table (the grid's table as Markdown and HTML), kept so that old imports work; import rnnlens.render.grid_table."""

from rnnlens.render.grid_table import *
