"""Domain-gap diagnostics: how far apart two sets of representations are, and the overlap of two domains.

* :mod:`jaxrec.diagnostics.gap` — gap measures between two sets of vectors: MMD, linear MMD, CORAL, the proxy
  A-distance, the distance and cosine of the means (:func:`domain_gap`);
* :mod:`jaxrec.diagnostics.overlap` — the users two domains share (:func:`overlap_stats`) and whether their
  links are real (:func:`link_test`);
* :mod:`jaxrec.diagnostics.report` — a trained model's user representations (:func:`scorer_user_tables`) and
  the report comparing them (:func:`diagnose`, :func:`format_report`, :func:`diagnostics_figure`).

Everything runs on the host and returns Python numbers (reports are JSON-serialisable).

Example:
  >>> import jaxrec
  >>> ds, _ = jaxrec.data.synthetic(n_users=300, n_items=(80, 60))
  >>> ds = jaxrec.data.cold_start_split(ds, "source", "target")
  >>> trained = jaxrec.methods.run("mmd", ds, source="source", target="target", epochs=2, progress=False)
  >>> tables = scorer_user_tables(trained, n_users=ds.n_users)
  >>> report = diagnose(ds, tables, source="source", target="target")
  >>> print(format_report(report))
"""

from jaxrec.diagnostics.gap import GAP_MEASURES, domain_gap, proxy_a_distance
from jaxrec.diagnostics.overlap import format_link_test, link_test, overlap_stats
from jaxrec.diagnostics.report import UserVectors, diagnose, diagnostics_figure, format_report, scorer_user_tables

__all__ = [
    "GAP_MEASURES",
    "UserVectors",
    "diagnose",
    "diagnostics_figure",
    "domain_gap",
    "format_link_test",
    "format_report",
    "link_test",
    "overlap_stats",
    "proxy_a_distance",
    "scorer_user_tables",
]
