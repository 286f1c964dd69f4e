"""The static status site (`reconcile site build`, DESIGN.md §7).

Design, and why:

* **Rollups, maintained incrementally** (`rollups.py`). Raw results are summarised into
  15-minute buckets per canary and region (runs, passes, and the bucket's exact p95)
  and into daily latency histograms per canary and region. A refresh recomputes only buckets
  from the last unsettled one on (a scan that zone maps keep to the last minutes), adds
  today's histogram counts in whole 2-hour blocks, and recomputes any older bucket or day
  that late rows landed in. The tables live in the state file (`site_*`), so a rebuild after
  one more minute of results reads little.
* **Quantiles in DuckDB, exact where affordable** (`queries.py`). 24-hour p50/p95/p99 are
  exact: `quantile_cont(x, [0.5, 0.95, 0.99])` over the window's raw rows (one day of rows).
  7- and 30-day quantiles come from the mergeable histograms (`sketch.py`, DDSketch-style
  log bins, within 2% of exact): exact quantiles cannot be merged from buckets, and sorting a
  month of rows (50M at 1,000 canaries × 5 regions) takes longer than a whole build may.
  Uptime is exact everywhere (sums). Chart points are per-bucket p95s.
* **Windows end on step boundaries** (`windows.py`): 24 h on 15 minutes, 7 d and 30 d
  (calendar days, today included) on 2 hours, all 2 minutes behind the clock. Their figures
  are materialised (`site_window`, `site_chart`) when a window moves, so most rebuilds only
  re-read the live part: the blended status (`reports.target_statuses`, the read API's rule)
  and recent failures.
* **Pages re-rendered only when their inputs move** (`pages.py`, `publish.py`): each canary
  page has a key digesting what it shows; the manifest in the output directory remembers
  keys and byte digests. Writes are atomic per file (temporary file + `os.replace`), leaf
  pages before the pages linking to them; the first build renders into a hidden directory
  and renames it into place.

Modules: `windows` (bounds), `sketch` (histogram bins), `tables` (schema, watermarks),
`rollups` and `late` (incremental maintenance), `queries` (window figures, live reads),
`charts` (SVG), `formatting`, `model` (snapshot, pages, paths), `layout` (shared view parts),
`canary_page`, `fleet_pages` and `ops_pages` (template contexts), `pages` (the page plan),
`publish` (Jinja, manifest, atomic writes), `builder` (the three phases). Templates and the
stylesheet are in `site/` at the project root.
"""

from reconciler.sitebuild.builder import Build, Report, SiteBuilder, build_site
from reconciler.sitebuild.publish import SiteError

__all__ = ["Build", "Report", "SiteBuilder", "SiteError", "build_site"]
