#!/usr/bin/env python3
"""`make fuzz`: schemathesis, pinned in a virtual environment of its own,
against a freshly started service on each store, authenticated as a
superuser, with every check. Fails on any 500, schema violation or
undocumented status.

FUZZ_EXAMPLES sets the examples per operation and phase (default 100;
`make test` runs a short pass), FUZZ_STORES the stores (default
"sqlite postgres"). Reports land in target/fuzz/<store>/."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "target" / "fuzz"
VENV = ROOT / "target" / "fuzz-venv"
SCHEMATHESIS = "schemathesis==4.32.5"
CONFIG = ROOT / "tests" / "fuzz" / "schemathesis.toml"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
STORES = os.environ.get("FUZZ_STORES", "sqlite postgres").split()
ADMIN_EMAIL = "fuzz-admin@example.com"
ADMIN_PASSWORD = "a fuzzing passphrase that is long"
SECRET = "fuzzing-signing-secret-of-at-least-32-bytes"


def log(message):
    print(f"fuzz: {message}", file=sys.stderr, flush=True)


def run(*args, **kwargs):
    return subprocess.run(args, check=True, text=True, capture_output=True, **kwargs).stdout


def schemathesis():
    """The pinned schemathesis, installed once into target/fuzz-venv."""
    binary = VENV / "bin" / "schemathesis"
    pinned = SCHEMATHESIS.split("==")[1]
    if binary.exists() and pinned in run(str(binary), "--version"):
        return binary
    log(f"installing {SCHEMATHESIS} into {VENV}")
    shutil.rmtree(VENV, ignore_errors=True)
    run(sys.executable, "-m", "venv", str(VENV))
    run(str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", SCHEMATHESIS)
    return binary


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def with_database(url, name):
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")


def answers_by_status(base):
    """The service's own count of the requests it answered, by status."""
    with urllib.request.urlopen(base + "/metrics", timeout=30) as response:
        text = response.read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("gatehouse_http_requests_total{"):
            status = re.search(r'status="(\d+)"', line).group(1)
            counts[status] = counts.get(status, 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


def fuzz_store(store, binary, tool):
    """Starts a service on a new database of `store`, fuzzes it, and returns
    the counts of the JUnit report (operations, failures, errors)."""
    work = OUT / store
    shutil.rmtree(work, ignore_errors=True)
    (work / "mail").mkdir(parents=True)
    cleanup = None
    if store == "sqlite":
        database_url = f"sqlite://{work}/gatehouse.db"
    else:
        admin_url = run(str(ROOT / "scripts" / "postgres.sh")).strip()
        name = f"gatehouse_fuzz_{uuid.uuid4().hex[:8]}"
        run("psql", admin_url, "-qc", f"CREATE DATABASE {name}")
        database_url = with_database(admin_url, name)
        cleanup = lambda: run("psql", admin_url, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # Every request comes from one IP: the per-IP limits would answer 429
    # (documented) to most of the run and hide the routes behind them. And
    # the fuzzer reuses the addresses it reads in responses, the admin's
    # among them: its wrong guesses would lock the admin's own logins out.
    env = dict(os.environ, DATABASE_URL=database_url, GATEHOUSE_BIND=f"127.0.0.1:{port}",
               GATEHOUSE_JWT_SECRET=SECRET, GATEHOUSE_MAILER=f"file://{work}/mail", GATEHOUSE_LOGIN_IP_LIMIT="0",
               GATEHOUSE__LIMITS__MAIL_REQUESTS_PER_IP="0", GATEHOUSE__AUTH__LOGIN_ADDRESS_LIMIT="1000000",
               GATEHOUSE__AUTH__ACCESS_TTL_SECONDS="3600",
               RUST_LOG="warn")
    subprocess.run([str(binary), "create-superuser", "--email", ADMIN_EMAIL, "--password-stdin"],
                   input=ADMIN_PASSWORD, text=True, env=env, cwd=work, check=True, capture_output=True)
    server = subprocess.Popen([str(binary), "serve"], env=env, cwd=work, stdout=subprocess.DEVNULL,
                              stderr=open(work / "server.log", "w"))
    try:
        for _ in range(300):
            try:
                request(base, "GET", "/health/ready")
                break
            except OSError:
                time.sleep(0.1)
        log(f"{store}: {EXAMPLES} examples per operation against {base}")
        with open(work / "schemathesis.log", "w") as output:
            result = subprocess.run(
                [str(tool), "--config-file", str(CONFIG), "run", f"{base}/api/openapi.json",
                 "--max-examples", str(EXAMPLES), "--report", "junit", "--report-dir", str(work),
                 "--seed", os.environ.get("FUZZ_SEED", "1"), "--no-color"],
                cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            output.write(result.stdout)
        print(result.stdout, flush=True)
        answered = answers_by_status(base)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        if cleanup:
            cleanup()
    suite = ElementTree.parse(next(work.glob("junit*.xml"))).getroot()
    counts = {key: sum(int(s.get(key, 0)) for s in suite.iter("testsuite")) for key in ("tests", "failures", "errors")}
    server_errors = [line for line in (work / "server.log").read_text().splitlines() if " ERROR " in line]
    counts["server_error_lines"] = len(server_errors)
    counts["requests"] = sum(answered.values())
    counts["answers_5xx"] = sum(n for status, n in answered.items() if status.startswith("5"))
    counts["test_cases"] = next((line.strip() for line in result.stdout.splitlines()
                                 if line.strip().endswith(" skipped") and "generated" in line), "")
    counts["exit"] = result.returncode
    return counts


def main():
    tool = schemathesis()
    log("building the gatehouse binary")
    subprocess.run(["cargo", "build", "--bin", "gatehouse"], check=True, cwd=ROOT)
    binary = ROOT / "target" / "debug" / "gatehouse"
    OUT.mkdir(parents=True, exist_ok=True)
    results = {store: fuzz_store(store, binary, tool) for store in STORES}
    for store, counts in results.items():
        log(f"{store}: {counts['tests']} operations, {counts['requests']} requests answered "
            f"({counts['answers_5xx']} with 5xx), test cases: {counts['test_cases']}; "
            f"{counts['failures']} failed, {counts['errors']} errors, "
            f"{counts['server_error_lines']} ERROR lines in the server log")
    (OUT / "summary.json").write_text(json.dumps(results, indent=2))
    if any(c["exit"] or c["failures"] or c["errors"] or c["server_error_lines"] or c["answers_5xx"]
           for c in results.values()):
        sys.exit("fuzz: failures above; reports in target/fuzz/<store>/")


if __name__ == "__main__":
    main()
