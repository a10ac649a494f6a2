"""``advkit attacks``: the attack registry — what each attack is and what it supports."""

from __future__ import annotations

import typer
from rich.table import Table

from advkit.cli._common import JsonOption, emit, get_options


def register(app: typer.Typer) -> None:
    @app.command("attacks")
    def attacks(
        ctx: typer.Context,
        norm: str = typer.Option(None, help="Only attacks in this norm (linf, l2, l1)."),
        json_out: JsonOption = False,
    ) -> None:
        """List the registered attacks: norm, targeted and EOT support, black box, minimum-norm."""
        from advkit.attacks import describe_attack, list_attacks
        from advkit.errors import UsageError

        opts = get_options(ctx, json=json_out)
        if norm is not None and norm not in ("linf", "l2", "l1"):
            raise UsageError(f"unknown --norm {norm!r}; use linf, l2 or l1")
        rows = [describe_attack(name) for name in list_attacks(norm=norm)]

        def yes(flag: bool) -> str:
            return "yes" if flag else ""

        def render(console) -> None:  # noqa: ANN001
            cells = []
            for r in rows:
                kind = "black box" if r["black_box"] else "min-norm" if r["minimum_norm"] else ""
                eps = "" if r["default_eps"] is None else f"{r['default_eps'] * 255:.3g}/255"
                if r["norms"] == ["l2"] and r["default_eps"] is not None:
                    eps = f"{r['default_eps']:g}"
                cells.append([r["name"], ", ".join(r["norms"]) or "—", eps, yes(r["targeted"]), yes(r["eot"]), kind,
                              r["summary"]])
            table = Table()
            headers = ("name", "norm", "eps", "targeted", "EOT", "kind")
            widths = [max(len(header), *(len(c[i]) for c in cells)) for i, header in enumerate(headers)]
            for header, width in zip(headers, widths):
                table.add_column(header, no_wrap=True, width=width)
            # one line per attack: the summary is cut to what the terminal leaves (`--json` has it
            # whole); each column costs its width plus 3 (padding and rule), the frame 1 more
            what = max(10, console.width - sum(w + 3 for w in widths) - 4)
            table.add_column("what", no_wrap=True, overflow="ellipsis", max_width=what)
            for row in cells:
                table.add_row(*row)
            console.print(table)

        emit(opts, {"attacks": rows}, render)
