"""The administration commands: `configure plivo|vonage` and `doctor`.

`register(sub, add)` adds them to the `telebridge` parser. A mistake in arguments or settings
ends as `UsageError`/`ConfigError` (one line, exit 2); a carrier's API failing is one line naming
the carrier and the request, exit 1; `doctor` exits 1 when a check has something to fix.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from telebridge.cli.common import AddCommand, UsageError, failed, nested, quiet_logs, settings_of


def cmd_configure_plivo(args: argparse.Namespace) -> int:
    from telebridge.admin import configure

    settings = settings_of(args)
    quiet_logs()
    try:
        report = configure.configure_plivo(
            settings,
            app_name=args.app_name,
            app_id=args.app_id,
            numbers=args.number or [],
            dry_run=args.dry_run,
        )
    except configure.ConfigureError as exc:
        raise UsageError(str(exc)) from None
    except configure.CarrierFailure as exc:
        return failed(str(exc))
    print(configure.format_report(report))
    return 0


def cmd_configure_vonage(args: argparse.Namespace) -> int:
    from telebridge.admin import configure

    settings = settings_of(args)
    quiet_logs()
    application_id = args.application_id or settings.vonage_application_id
    if not application_id:
        raise UsageError(
            "--application-id: give the Vonage application (or set VONAGE_APPLICATION_ID)"
        )
    try:
        report = configure.configure_vonage(
            settings, application_id=application_id, dry_run=args.dry_run
        )
    except configure.ConfigureError as exc:
        raise UsageError(str(exc)) from None
    except configure.CarrierFailure as exc:
        return failed(str(exc))
    print(configure.format_report(report))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from telebridge.admin import doctor

    quiet_logs()
    checks = doctor.diagnose(lambda: settings_of(args))
    sys.stdout.write(doctor.format_table(checks))
    return 0 if all(check.ok for check in checks) else 1


def register(sub: Any, add: AddCommand) -> None:
    """Add `configure` and `doctor` to the `telebridge` subparsers."""
    add_configure = nested(sub, "configure", "point a carrier at TELEBRIDGE_PUBLIC_URL")
    plivo = add_configure(
        "plivo", "create or update a Plivo application and attach numbers", cmd_configure_plivo
    )
    which = plivo.add_mutually_exclusive_group(required=True)
    which.add_argument("--app-name", metavar="NAME", help="find (or create) by name")
    which.add_argument("--app-id", metavar="ID", help="an existing application")
    plivo.add_argument(
        "--number", action="extend", nargs="+", metavar="N",
        help="numbers to attach to the application (repeatable)",
    )  # fmt: skip
    plivo.add_argument("--dry-run", action="store_true", help="show the changes, make none")
    vonage = add_configure(
        "vonage", "set a Vonage application's voice webhooks and signed callbacks",
        cmd_configure_vonage,
    )  # fmt: skip
    vonage.add_argument("--application-id", metavar="ID", help="default: VONAGE_APPLICATION_ID")
    vonage.add_argument("--dry-run", action="store_true", help="show the changes, make none")

    add(
        "doctor",
        "check settings, the Waves key, carrier credentials and the public URL",
        cmd_doctor,
    )
