"""A report as a list of blocks (headings, text, tables, images) written as Markdown and HTML."""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from int8kit.fileio import write_text


def cell(x, digits: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        if math.isnan(x):
            return "n/a"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return f"{x:.{digits}f}" if abs(x) < 1e5 else f"{x:.3g}"
    return str(x)


@dataclass
class Document:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h", text))

    def text(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, headers: list[str], rows: list[list]) -> None:
        self.blocks.append(("t", headers, [[cell(c) for c in r] for r in rows]))

    def image(self, file: str, alt: str) -> None:
        self.blocks.append(("i", file, alt))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if b[0] == "h":
                out += [f"## {b[1]}", ""]
            elif b[0] == "p":
                out += [b[1], ""]
            elif b[0] == "t":
                esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
                out.append("| " + " | ".join(esc(h) for h in b[1]) + " |")
                out.append("|" + "---|" * len(b[1]))
                out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in b[2]]
                out.append("")
            elif b[0] == "i":
                out += [f"![{b[2]}]({b[1]})", ""]
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape
        out = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{e(self.title)}</title><style>body{{font-family:sans-serif;max-width:1100px;"
            "margin:auto}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid "
            "#ccc;padding:3px 6px;text-align:right}td:first-child,th:first-child{text-align:left}"
            "img{max-width:100%}</style></head><body>",
            f"<h1>{e(self.title)}</h1>",
        ]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h2>{e(b[1])}</h2>")
            elif b[0] == "p":
                out.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "t":
                out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in b[1]) + "</tr>")
                out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2]]
                out.append("</table>")
            elif b[0] == "i":
                out.append(f"<p><img src='{e(b[1])}' alt='{e(b[2])}'></p>")
        out.append("</body></html>")
        return "\n".join(out)

    def write(self, folder: str | os.PathLike) -> Path:
        """report.md and report.html into ``folder`` (atomically); returns the Markdown path."""
        folder = Path(folder)
        write_text(folder / "report.md", self.markdown())
        write_text(folder / "report.html", self.html())
        return folder / "report.md"
