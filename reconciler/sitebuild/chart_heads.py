"""Charts' stored parts, drawn between builds and kept while their window stays.

A chart's points before its seam (`charts.seam`) are the window's stored ones, which change
only when the window moves (its chart series gets a new token, `kept.py`). A builder that
rebuilds every minute draws that part of each chart once (`charts.draw_head`) between
builds (`SiteBuilder.tidy`): from the series the last build read, and from a staged move's
next series, which `stage_ahead` read under the token the build publishing the move adopts.
Every build under a token hands its heads to the pages, which draw only the points from the
seam on; the build publishing a move too (it drew each of the window's charts whole). About
18 KB a chart over 24 hours (measured); a 365-day chart with a year of data, about 65 KB
(estimated from the bytes a slot takes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from reconciler.sitebuild.canary_page import chart_regions
from reconciler.sitebuild.charts import Head, draw_head, seam
from reconciler.sitebuild.model import CanaryInfo, Snapshot
from reconciler.sitebuild.moves import Bounds
from reconciler.sitebuild.queries import Series, Staged
from reconciler.sitebuild.windows import WINDOWS, Window


class KeptHeads:
    """The heads of charts (`charts.Head`) by window, each window's under the series token
    they were drawn for."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[str, dict[str, Head]]] = {}

    def usable(self, tokens: Mapping[str, str | None]) -> dict[tuple[str, str], Head]:
        """The heads drawn under the windows' current series `tokens`, by (window, canary
        key)."""
        return {
            (window, canary): head
            for window, (token, heads) in self._windows.items()
            if tokens.get(window) == token
            for canary, head in heads.items()
        }

    def draw(
        self,
        snapshot: Snapshot,
        tokens: Mapping[str, str | None],
        staged: Iterable[Staged] = (),
    ) -> None:
        """Draw the heads of the charts whose stored points `snapshot` read that are not
        drawn under their window's token yet (`tokens`: the series tokens the snapshot's
        stored points were read under), then those of the `staged` windows' series
        (`queries.keep_staged_series`), which the build publishing them adopts."""
        canaries = {canary.key: canary for canary in snapshot.canaries}
        scopes = _scopes(snapshot)
        for window in WINDOWS:
            token = tokens.get(window.name)
            state = snapshot.windows.get(window.name)
            if not token or state is None:
                self._windows.pop(window.name, None)
                continue
            stored = snapshot.stored.get(window.name, {})
            self._draw(window, token, (state.start, state.end), stored, canaries, scopes)
        for part in staged:
            self._draw(part.window, part.token, part.bounds, part.series, canaries, scopes)

    def _draw(
        self,
        window: Window,
        token: str,
        bounds: Bounds,
        stored: Mapping[tuple[str, str], Series],
        canaries: Mapping[str, CanaryInfo],
        scopes: Mapping[tuple[str, str], set[str | None]],
    ) -> None:
        """Draw the heads of one window's charts at `bounds` from its `stored` series read
        under `token`, those not drawn under it yet. A chart whose regions differ when a
        page draws it (`scopes`: the regions of each (window, canary)'s figures now) is
        drawn whole then (`charts.latency_chart`)."""
        kept = self._windows.get(window.name)
        heads = kept[1] if kept is not None and kept[0] == token else {}
        start = window.frame(bounds[0])
        at = seam(window, *bounds)
        for (_, key), points in stored.items():
            canary = canaries.get(key)
            if key in heads or canary is None:
                continue
            regions = chart_regions(canary, scopes.get((window.name, key), ()))
            heads[key] = draw_head(window, start, regions, points, at)
        self._windows[window.name] = (token, heads)


def _scopes(snapshot: Snapshot) -> dict[tuple[str, str], set[str | None]]:
    """The regions (None: all) of each (window, canary key)'s figures in `snapshot`."""
    scopes: dict[tuple[str, str], set[str | None]] = {}
    for window_name, parent, region in snapshot.figures:
        scopes.setdefault((window_name, parent), set()).add(region)
    return scopes
