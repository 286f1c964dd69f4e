"""The static status site (`reconcile site build`).

Design, and why (the figures: bench/README.md, `site.py`):

* **Rollups, maintained incrementally** (`rollups.py`). Raw results are summarised into
  15-minute buckets per canary and region (runs, passes, and the bucket's exact p95)
  and into daily latency histograms per canary and region. A refresh recomputes only buckets
  from the last unsettled one on (a scan that zone maps keep to the last minutes), adds
  today's histogram counts in whole 2-hour blocks (in place), and recomputes any older
  bucket or day that late rows landed in. Two days of failed runs are kept aside for the
  pages' recent failures. The tables live in the state file (`site_*`), so a rebuild after
  one more minute of results reads little.
* **Quantiles from mergeable histograms** (`sketch.py`, DDSketch-style log bins, within 2%
  of exact) in every window: exact quantiles cannot be merged, and every build adds the
  newest rows to each window's figures. Uptime is exact everywhere (sums). Chart points are
  per-bucket p95s.
* **Windows move by what entered and left** (`figures.py`). Each window's stored figures end
  on a step boundary (`windows.py`: 24 h every 15 minutes, 7 d and 30 d every 2 hours,
  calendar days). When it moves, its chart points, sums and histogram are updated by the
  buckets, rows and days that entered and left, not recomputed.
* **Every figure up to the build** (`live.py`). Each build adds the rows started since each
  window's stored end (two hours of rows at most) to its figures and charts, so a run
  posted a second before a build counts in every window.
* **One window's move at a time** (`windows.py`, `moves.py`). The long windows lag the clock
  by 3 and 8 minutes, so no two windows move in the same minute; and a builder that rebuilds
  every minute computes a moved window's figures in one build and publishes them (pages
  follow) in the next, so no build pays for both.
* **Pages drawn only when their inputs move** (`pages.py`, `publish.py`): each canary page
  has a key digesting what it shows; the manifest remembers keys and byte digests; pages are
  pre-formatted in Python (Jinja loops cost more than the rest of a page) and drawn by two
  forked processes; canary pages, drawn every build in a busy fleet, fill a skeleton of their
  flat template instead of going through Jinja one by one (`Page.flat`).
* **What changes seldom, read once per change** (`kept.py`): a builder kept from build to
  build (the server's) keeps each window's histogram (indexed, so that the open bins are
  added by binary searches, `core/sketch.py`) and chart series, the SLA months, the long
  charts' whole days and the served resources, under a token written with them, and reads
  them again only when it changed; a moved window's chart series are joined when its
  figures are staged, and a new day's SLA pages drawn (`draw_ahead`), between builds.
* **Builds without the garbage collector** (`builder.py`): a build's objects live for one
  build; the collector's passes over the whole heap cost a third of reading the snapshot.
* **The site swapped whole** (`versions.py`): `out` is a link to a version directory; a build
  fills a new one (new files for changed pages, hard links for the rest) and swaps the link,
  so a reader never sees a half-built site and unchanged pages keep their files.

Modules: `windows` (bounds), `moves` (when figures are computed and published), `sketch`
(histogram bins), `tables` (schema, watermarks), `rollups` and `late` (incremental
maintenance), `figures` (window tables), `live` (the open parts), `queries` (reads),
`kept` (rows kept between builds), `charts` (SVG), `formatting`, `model` (snapshot, pages,
paths), `layout` (shared view parts), `canary_page`, `fleet_pages` and `ops_pages` (template
contexts), `pages` (the page plan), `publish` (Jinja, manifest, rendering processes),
`versions` (the output directory), `builder` (the three phases). Templates and the
stylesheet are in `site/` at the project root.
"""

from reconciler.sitebuild.builder import Build, Report, SiteBuilder, build_site
from reconciler.sitebuild.publish import SiteError

__all__ = ["Build", "Report", "SiteBuilder", "SiteError", "build_site"]
