"""``broker confirm``: commands for integration engineers working with a Confirm target."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from adapters.common.cli import save_lookups, target_adapter, warn_not_offered

confirm_app = typer.Typer(help="Confirm (Brightly) targets: codes and connectivity.", no_args_is_help=True)
console = Console()


@confirm_app.command("lookups")
def lookups(
    target: Annotated[str, typer.Option(help="The Confirm target's name in routes.yaml.")] = "confirm",
    save: Annotated[bool, typer.Option(help="Save them as <target>.lookups.yaml beside the mappings, so "
                                            "`broker check` reports mapping codes Confirm does not know.")] = False,
) -> None:
    """Fetch the codes Confirm knows: services, subjects, attributes, statuses (GetEnquiryLookups) and enquiry
    methods, customer types, points of contact (GetCustomerLookups)."""
    from rich.table import Table

    from adapters.confirm.adapter import ConfirmAdapter
    from broker.sdk import DeliveryError

    adapter, path = target_adapter(console, target, "confirm", "Confirm", ConfirmAdapter)
    try:
        with console.status("Asking Confirm for its lookups (this can take a while)..."):
            codes, not_offered = adapter.saved_lookups()
    except DeliveryError as exc:
        console.print(f"[red]Confirm did not give its lookups: {exc.reason}: {exc.message}[/red]")
        raise typer.Exit(1) from exc
    finally:
        adapter.close()
    warn_not_offered(console, "Confirm", not_offered, "its codes were not saved and `broker check` does not check them")
    if not codes:
        console.print("[red]Confirm offered none of its lookups: nothing to show or save.[/red]")
        raise typer.Exit(1)
    if "services" in codes:
        table = Table("service", "subjects")
        for service, subjects in sorted(codes["services"].items()):
            table.add_row(service, ", ".join(subjects))
        console.print(table)
    for key, label in (("statuses", "Status codes"), ("attributes", "Attribute types"),
                       ("enquiry_methods", "Enquiry methods"), ("customer_types", "Customer types"),
                       ("points_of_contact", "Points of contact")):
        if key in codes:
            console.print(f"{label}: {', '.join(codes[key])}")
    if save:
        offered = " and ".join(name for name in ("GetEnquiryLookups", "GetCustomerLookups")
                               if name not in {gap.name for gap in not_offered})
        save_lookups(path, codes, f"Codes known to Confirm target {target!r}, from {offered}. "
                                  "Refresh with `broker confirm lookups --save`.")
        console.print(f"Saved to {path}; `broker check` now reports codes Confirm does not know.")
