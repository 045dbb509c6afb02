"""Charts as SVG drawn on the server (pygal), served as images: no script, nothing remote.

pygal puts a small configuration script into its SVG for its optional JavaScript; it is
removed, and the image answer's own policy forbids scripts anyway.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence

import pygal
from pygal.style import Style
from starlette.responses import Response

# pygal appends a legacy import hook for its map plugins (unused here) to sys.meta_path;
# with it, every failed import anywhere in the process warns (ImportWarning: no
# find_spec), which test suites running with warnings as errors turn into failures.
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "PluginImportFixer"]

# The dashboard's palette (dashboard.css): delivered, opened, clicked, bounced, ...
COLORS = ("#64748b", "#16a34a", "#2563eb", "#dc2626", "#9333ea", "#ea580c", "#0891b2")
_STYLE = Style(
    background="transparent",
    plot_background="transparent",
    foreground="#334155",
    foreground_strong="#0f172a",
    foreground_subtle="#e2e8f0",
    colors=COLORS,
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    label_font_size=12,
    major_label_font_size=12,
    legend_font_size=13,
    value_font_size=12,
    tooltip_font_size=12,
)
# pygal's configuration script, and its comments (links to its web site).
_UNWANTED = re.compile(r"<script\b.*?</script>|<!--.*?-->", re.DOTALL | re.IGNORECASE)
# An SVG image runs no script in any browser; this policy says so for old ones too.
SVG_POLICY = "default-src 'none'; style-src 'unsafe-inline'"


def line_chart(labels: Sequence[str], series: Mapping[str, Sequence[int]],
               width: int = 900, height: int = 300, label_every: int = 1) -> str:
    """A line chart, one line per series (in `COLORS` order), as SVG text."""
    chart = pygal.Line(
        width=width, height=height, style=_STYLE, js=[], disable_xml_declaration=True,
        show_dots=len(labels) <= 40, dots_size=2.5, fill=False, legend_at_bottom=True,
        legend_at_bottom_columns=len(series) or 1, x_label_rotation=0,
        show_minor_x_labels=label_every <= 1, x_labels_major_every=max(label_every, 1),
        truncate_label=-1, min_scale=2, max_scale=6, include_x_axis=True,
        margin=8, spacing=12, print_values=False, no_data_text="No data yet",
    )
    chart.x_labels = list(labels)
    for name, values in series.items():
        chart.add(name, list(values))
    svg: str = chart.render(is_unicode=True)
    return _UNWANTED.sub("", svg)


def svg_response(svg: str) -> Response:
    return Response(svg, media_type="image/svg+xml",
                    headers={"Content-Security-Policy": SVG_POLICY,
                             "Cache-Control": "private, max-age=30"})
