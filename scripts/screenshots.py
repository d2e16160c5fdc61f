#!/usr/bin/env python
"""Save the README's screenshots from a running demo (``make demo``).

    .venv/bin/python scripts/screenshots.py                       # demo defaults
    .venv/bin/python scripts/screenshots.py --base-url http://127.0.0.1:8000 \\
        --marketer marketer:marketer-demo-pass --growth growth:growth-demo-pass \\
        [--experiment KEY] [--out docs/screenshots]

Signs in as the marketer and saves ``tier-playbook.png`` (the playbook) and
``lift-report.png`` (the lift report of ``--experiment``, by default the experiment with
the most winning cells in the playbook); signs in as the growth user and saves
``dimension.png`` (the membership expiry windows with their distribution) and
``campaigns.png`` (the campaign list) and ``builder.png`` (the renewal campaign in the
guided builder). Credentials are what ``manage.py demo_users``
prints. Drives Debian's Chromium through Playwright (no browser download); every
request stays on the demo's host.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
# The first screenful of each page: what a reader of the README needs, at a readable size.
VIEWPORT = {"width": 1400, "height": 1000}


def credentials(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("use USER:PASSWORD")
    return user, password


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="The demo's address.")
    parser.add_argument("--marketer", type=credentials, default=("marketer", "marketer-demo-pass"), metavar="USER:PASS")
    parser.add_argument("--growth", type=credentials, default=("growth", "growth-demo-pass"), metavar="USER:PASS")
    parser.add_argument("--experiment", help="The experiment key of the lift report (default: most winning cells).")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="Where the PNGs go.")
    return parser.parse_args(argv)


class Failure(Exception):
    pass


def login(page, base: str, user: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", user)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_load_state()
    # The login form's own error; not the worker banner every admin page may carry.
    refused = page.locator(".errornote:not(#worker-banner)")
    if refused.count():
        raise Failure(f"cannot sign in as {user!r}: {refused.first.inner_text().strip()}")


def visit(page, url: str) -> None:  # type: ignore[no-untyped-def]
    response = page.goto(url)
    if response is None or response.status != 200:
        raise Failure(f"{url} answered {response.status if response else 'nothing'}")


def best_experiment(page) -> str | None:  # type: ignore[no-untyped-def]
    """The experiment whose campaign has the most winning cells on the playbook page."""
    return page.evaluate(
        """() => {
          const wins = {};
          document.querySelectorAll("td[data-outcome='win']").forEach(td => {
            wins[td.dataset.campaign] = (wins[td.dataset.campaign] || 0) + 1;
          });
          let best = null, most = -1;
          document.querySelectorAll("#playbook-overall th.pb-campaign").forEach(th => {
            const n = wins[th.dataset.campaign] || 0;
            if (n > most) { most = n; best = th.querySelector("a.pb-report-link").getAttribute("href"); }
          });
          const match = best && best.match(/experiments\\/([^/]+)\\//);
          return match ? decodeURIComponent(match[1]) : null;
        }"""
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from playwright.sync_api import sync_playwright

    base = args.base_url.rstrip("/")
    host = urlparse(base).hostname
    args.out.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []

    def save(page, name: str) -> None:  # type: ignore[no-untyped-def]
        path = args.out / name
        page.screenshot(path=str(path), full_page=False)
        saved.append(path)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            for role, (user, password) in (("marketer", args.marketer), ("growth", args.growth)):
                context = browser.new_context(viewport=VIEWPORT)
                # The admin's navigation sidebar starts collapsed: more room for the tables.
                context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
                page = context.new_page()
                page.set_default_timeout(30_000)
                page.route(
                    "**/*",
                    lambda route: route.continue_() if urlparse(route.request.url).hostname == host else route.abort(),
                )
                login(page, base, user, password)
                if role == "marketer":
                    visit(page, f"{base}/admin/playbook/")
                    save(page, "tier-playbook.png")
                    key = args.experiment or best_experiment(page)
                    if key is None:
                        raise Failure("the playbook shows no campaign with an experiment; pass --experiment KEY")
                    print(f"lift report of experiment {key}")
                    visit(page, f"{base}/admin/reports/experiments/{key}/")
                    # The conversion-over-time chart loads after the tables.
                    page.wait_for_function(
                        "() => { const s = document.getElementById('timeseries-status');"
                        " return !s || !s.textContent.startsWith('Loading'); }"
                    )
                    save(page, "lift-report.png")
                else:
                    visit(page, f"{base}/admin/segments/dimension/?q=expiry")
                    page.click("#result_list tbody tr:first-child th a")
                    page.wait_for_load_state("networkidle")
                    save(page, "dimension.png")
                    visit(page, f"{base}/admin/campaigns/campaign/")
                    save(page, "campaigns.png")
                    # The guided builder of the demo's renewal campaign (read-only: it is running).
                    visit(page, f"{base}/admin/campaigns/campaign/?kind__exact=renewal")
                    page.click("#result_list tbody tr:first-child th a")
                    page.click("#builder-open")
                    page.wait_for_load_state("networkidle")
                    save(page, "builder.png")
                context.close()
        except Failure as exc:
            print(f"screenshots: {exc}", file=sys.stderr)
            return 1
        finally:
            browser.close()
    for path in saved:
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
