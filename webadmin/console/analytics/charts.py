"""Plotly figures built on the server from the analytics tables; the page embeds them as JSON data blocks and
static/js/analytics.js draws them with the locally served plotly.js (no inline script, no CDN)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plotly.io.json import to_json_plotly

from webadmin.services.analytics import Funnel, Table

COLORS = {"Sent": "#0d6efd", "Failed": "#dc3545", "Opened": "#198754", "Opens": "#198754"}
# Figures are plotly's figure dictionaries, serialised by plotly's JSON encoder. They are not built as
# plotly.graph_objects (whose validation costs a few ms per figure on every page view); the tests validate every
# figure through go.Figure instead. No template: plotly.js draws its plain default, a light layout of our own.
LAYOUT: dict[str, Any] = {
    "height": 300,
    "margin": {"l": 48, "r": 12, "t": 32, "b": 48},
    "font": {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 12},
    "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
    "hovermode": "x unified",
    "xaxis": {"gridcolor": "#e9ecef", "automargin": True},
    "yaxis": {"gridcolor": "#e9ecef", "rangemode": "tozero", "automargin": True},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
}


@dataclass(frozen=True)
class Chart:
    """A figure with the table it was drawn from and where that table downloads as CSV."""

    table: Table
    figure: str  # JSON, safe inside <script type="application/json">
    csv_url: str

    @property
    def key(self) -> str:
        """The table's key (element ids)."""
        return self.table.key


def _json(figure: dict[str, Any]) -> str:
    """The figure as JSON that cannot end its <script> element early (names come from users)."""
    return to_json_plotly(figure).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _figure(traces: list[dict[str, Any]], **layout: Any) -> str:
    """A figure with the common layout."""
    return _json({"data": traces, "layout": {**LAYOUT, **layout}})


def _percent(value: str) -> float | None:
    """"40.0%" → 40.0 (None for "–")."""
    return float(value[:-1]) if value.endswith("%") else None


def bars(table: Table, label: str, series: tuple[str, ...] = ("Sent", "Opened", "Failed")) -> str:
    """Grouped bars of some count columns against a label column (time or category)."""
    x = table.column(label)
    traces = [{"type": "bar", "name": name, "x": x, "y": table.column(name), "marker": {"color": COLORS[name]}}
              for name in series]
    return _figure(traces, barmode="group")


def funnel(stages: Funnel) -> str:
    """The campaign's stages as a plotly funnel (values as in the table beside it)."""
    labels, values, shares = zip(*stages.chart_stages, strict=True)
    text = [f"{value:,} ({share})" for value, share in zip(values, shares, strict=True)]
    trace = {"type": "funnel", "y": list(labels), "x": list(values), "text": text, "textinfo": "text",
             "marker": {"color": "#0d6efd"}}
    return _figure([trace], hovermode="closest", margin={"l": 80, "r": 12, "t": 8, "b": 24}, showlegend=False)


def open_curve(table: Table) -> str:
    """Opens per hour after sending (bars) and the running open rate (line, right axis)."""
    x = table.column("Hour after sending")
    traces = [
        {"type": "bar", "name": "Opens", "x": x, "y": table.column("Opens"), "marker": {"color": COLORS["Opens"]}},
        {"type": "scatter", "name": "Open rate so far (%)", "x": x, "y": [_percent(v) for v in
                                                                          table.column("Open rate so far")],
         "yaxis": "y2", "mode": "lines", "line": {"color": "#6f42c1"}},
    ]
    return _figure(traces, xaxis={**LAYOUT["xaxis"], "type": "category",
                                  "title": {"text": "hours after sending started"}},
                   yaxis2={"overlaying": "y", "side": "right", "rangemode": "tozero", "showgrid": False})
