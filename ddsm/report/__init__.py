"""From a finished search to samplers and people: schedule files, a measured front table, figures.

A search folder (read by :func:`ddsm.search.folder.load_search`) holds the
Pareto front; the modules here turn it into what a sampler loads and what a
person reads:

- :mod:`.export`: one schedule file per front member, ranked cheapest first,
  ``best-under-B.json`` per requested budget, and the front table with
  measured speed-ups (:func:`export_front`);
- :mod:`.plots`: the front with its families, widths per step, sensitivity
  and sample grids (:func:`plot_search`);
- :mod:`.analysis`: the uniform and two-segment families, full-width
  quality and per-gene sensitivity, as tables;
- :mod:`.outdir`: which search a report folder belongs to, and replacing
  only its own files.

Both commands refuse, with a one-line :class:`~ddsm.errors.DDSMError` and
before anything is written: a missing folder, a folder that is not a search
or has not finished a generation, a search with no feasible point, a
checkpoint of another supernet than the search's, and an output folder that
is not empty and is not an earlier report of the *same* search.
"""

from ddsm.report.analysis import evaluate_missing, families, full_width_quality, sensitivity
from ddsm.report.export import ExportResult, export_front, format_table, front_table, time_schedules
from ddsm.report.plots import PlotResult, plot_front, plot_samples, plot_search, plot_sensitivity, plot_widths

__all__ = ["ExportResult", "PlotResult", "evaluate_missing", "export_front", "families", "format_table", "front_table",
           "full_width_quality", "plot_front", "plot_samples", "plot_search", "plot_sensitivity", "plot_widths",
           "sensitivity", "time_schedules"]
