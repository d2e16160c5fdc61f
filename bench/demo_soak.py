#!/usr/bin/env python
"""`make demo` as a newcomer meets it, several times in a row: does it keep serving?

    .venv/bin/python bench/demo_soak.py [--runs 3] [--serve-minutes 15] [--customers 50000]
        [--port 8100] [--var /tmp/demo-soak] [--out bench/results/demo_soak.json]

Each run starts ``scripts/demo.sh`` (what ``make demo`` runs) in a session of its own, with
the same ``GROWTH_VAR_DIR`` every run (the second and third runs find the first one's
database, as a newcomer's would). Once the admin is up it:

1. signs in to the admin as the growth user in Debian's Chromium (Playwright), opens a
   running campaign, presses "Duplicate as draft", and launches the copy with its
   "Launch" button: a campaign launched from the admin, through the real worker;
2. for ``--serve-minutes`` polls ``/readyz`` every 20 s (200 means a worker heartbeat was
   seen in the last minute), reads the copy's deliveries from the database, and checks that
   the supervised worker process is alive;
3. stops the demo (SIGINT to its session, as Ctrl-C does) and checks it stopped.

A run passes when ``/readyz`` never said "degraded", the copy's deliveries left the queue
(sent or, for reasons the send-time checks give, held), and the worker log shows no
unrecoverable error. Results (one object per run) go to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def readyz(base: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=10) as response:
            return response.status, response.read().decode()[:200]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()[:200]
    except OSError as exc:
        return 0, str(exc)[:200]


def deliveries(var: Path, campaign_key: str) -> dict[str, int]:
    """The copy's deliveries by status, read-only from the demo's SQLite file."""
    db = sqlite3.connect(f"file:{var / 'db.sqlite3'}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute(
            "SELECT d.status, COUNT(*) FROM campaigns_delivery d JOIN campaigns_campaign c ON c.id = d.campaign_id"
            " WHERE c.key = ? GROUP BY d.status",
            (campaign_key,),
        ).fetchall()
    finally:
        db.close()
    return {status: count for status, count in rows}


def launch_copy(base: str, user: str, password: str, var: Path) -> dict[str, str]:
    """In the admin: duplicate a running campaign as a draft, give the copy's experiment a
    planned end two weeks out (the demo's plans end a second after they start: its time is
    compressed), and launch the copy with its "Launch" button."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1366, "height": 900})

        def click(selector: str) -> None:
            with page.expect_navigation():
                page.click(selector)

        page.goto(f"{base}/admin/login/")
        page.fill("#id_username", user)
        page.fill("#id_password", password)
        click("input[type=submit]")
        page.goto(f"{base}/admin/campaigns/campaign/?status__exact=running")
        links = page.locator("#result_list tbody tr th a")
        if links.count() == 0:
            raise RuntimeError("no running campaign in the demo's admin")
        source = links.first.inner_text()
        click("#result_list tbody tr th a")
        click("#duplicate-button")
        message = page.locator(".messagelist li").first.inner_text()
        copy_key = message.split("Draft copy ", 1)[1].split(" ", 1)[0]
        db = sqlite3.connect(f"file:{var / 'db.sqlite3'}?mode=ro", uri=True, timeout=10)
        campaign_id, experiment_id = db.execute(
            "SELECT id, experiment_id FROM campaigns_campaign WHERE key = ?", (copy_key,)
        ).fetchone()
        db.close()
        end = dt.datetime.now(dt.UTC) + dt.timedelta(days=14)
        page.goto(f"{base}/admin/experiments/experiment/{experiment_id}/change/")
        page.fill("#id_planned_end_at_0", end.strftime("%Y-%m-%d"))
        page.fill("#id_planned_end_at_1", end.strftime("%H:%M:%S"))
        click("input[name=_continue]")
        plan_message = page.locator(".messagelist li, .errornote").first.inner_text()
        page.goto(f"{base}/admin/campaigns/campaign/{campaign_id}/change/")
        click("input[name=_launch]")
        outcome = page.locator(".messagelist li").first.inner_text()
        browser.close()
    return {"source": source, "copy": copy_key, "plan_message": plan_message, "launch_message": outcome}


def soak_once(args: argparse.Namespace, number: int) -> dict[str, object]:
    base = f"http://127.0.0.1:{args.port}"
    env = dict(os.environ, GROWTH_VAR_DIR=str(args.var), DEMO_PORT=str(args.port), DEMO_CUSTOMERS=str(args.customers))
    log = open(args.var.parent / f"{args.var.name}-run{number}.log", "w")
    started = time.monotonic()
    # Ctrl-C in a terminal: SIGINT to the demo's process group. A process started in the
    # background (nohup, CI) inherits SIGINT ignored, and bash cannot trap a signal ignored on
    # entry: restore the default so the demo's own Ctrl-C handling is what gets tested.
    demo = subprocess.Popen(
        ["scripts/demo.sh"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    result: dict[str, object] = {"run": number, "customers": args.customers}
    try:
        while readyz(base)[0] != 200:
            if demo.poll() is not None:
                raise RuntimeError(f"make demo exited with {demo.returncode} before serving")
            if time.monotonic() - started > args.setup_timeout:
                raise RuntimeError("the admin did not come up in time")
            time.sleep(5)
        result["setup_seconds"] = round(time.monotonic() - started, 1)
        users = dict(line.split(" / ", 1) for line in (args.var / "demo-users.txt").read_text().splitlines())
        password = users["growth"].split(" ", 1)[0]
        result["launch"] = launch_copy(base, "growth", password, args.var)
        key = result["launch"]["copy"]
        polls: list[dict[str, object]] = []
        serve_started = time.monotonic()
        while time.monotonic() - serve_started < args.serve_minutes * 60:
            status, body = readyz(base)
            worker_pid = (args.var / "worker.pid").read_text().strip() if (args.var / "worker.pid").exists() else ""
            alive = bool(worker_pid) and Path(f"/proc/{worker_pid}").exists()
            polls.append(
                {
                    "t": round(time.monotonic() - serve_started),
                    "readyz": status,
                    "worker_alive": alive,
                    "deliveries": deliveries(args.var, key),
                }
            )
            if status != 200:
                polls[-1]["body"] = body
            time.sleep(20)
        result["polls"] = len(polls)
        result["readyz_not_ok"] = [p for p in polls if p["readyz"] != 200]
        result["worker_dead_polls"] = sum(1 for p in polls if not p["worker_alive"])
        result["final_deliveries"] = polls[-1]["deliveries"] if polls else {}
        first_done = next((p["t"] for p in polls if p["deliveries"] and not p["deliveries"].get("queued")), None)
        result["deliveries_settled_after_seconds"] = first_done
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        log.close()
    # "Ctrl-C stops everything": the worker runs in a session of its own, so check it by pid.
    worker_pid = (args.var / "worker.pid").read_text().strip() if (args.var / "worker.pid").exists() else ""
    time.sleep(5)
    result["worker_left_running_after_stop"] = bool(worker_pid) and Path(f"/proc/{worker_pid}").exists()
    worker_log = (args.var / "worker.log").read_text(errors="replace")
    result["unrecoverable_errors_in_worker_log"] = worker_log.count("Unrecoverable error")
    result["worker_restarts_in_log"] = worker_log.count("exited with status")
    final = result.get("final_deliveries") or {}
    result["passed"] = bool(
        not result.get("readyz_not_ok")
        and result.get("worker_dead_polls") == 0
        and final
        and not final.get("queued")
        and final.get("sent", 0) > 0
        and result["unrecoverable_errors_in_worker_log"] == 0
        and not result["worker_left_running_after_stop"]
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve-minutes", type=float, default=15)
    parser.add_argument("--customers", type=int, default=50000)
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--var", type=Path, default=Path("/tmp/demo-soak/var"))
    parser.add_argument("--setup-timeout", type=float, default=3600)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "demo_soak.json")
    args = parser.parse_args(argv)
    args.var.mkdir(parents=True, exist_ok=True)
    runs = []
    for number in range(1, args.runs + 1):
        try:
            runs.append(soak_once(args, number))
        except Exception as exc:  # noqa: BLE001 -- reported, and the next run still tried
            runs.append({"run": number, "passed": False, "error": repr(exc)})
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "readyz_not_ok"}), flush=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    args.out.write_text(
        json.dumps(
            {"benchmark": "demo_soak", "commit": commit, "serve_minutes": args.serve_minutes, "runs": runs}, indent=2
        )
        + "\n"
    )
    return 0 if all(r.get("passed") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
