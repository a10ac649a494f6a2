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
            table = Table("name", "norm", "eps", "targeted", "EOT", "kind", "what")
            for r in rows:
                kind = "black box" if r["black_box"] else "min-norm" if r["minimum_norm"] else ""
                eps = "" if r["default_eps"] is None else f"{r['default_eps'] * 255:.3g}/255"
                if r["norms"] == ["l2"] and r["default_eps"] is not None:
                    eps = f"{r['default_eps']:g}"
                table.add_row(r["name"], ", ".join(r["norms"]) or "—", eps, yes(r["targeted"]), yes(r["eot"]), kind,
                              r["summary"])
            console.print(table)

        emit(opts, {"attacks": rows}, render)
