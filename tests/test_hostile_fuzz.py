"""The fuzzers (atheris, fuzz/): their corpus replays cleanly, and a bounded run finds nothing.

- Every input kept in `fuzz/corpus/<harness>/` (the seeds: real offers and fragments from
  aiortc, Chromium and FFmpeg, hand-written requests, and what the fuzzers found that
  reached new code or once broke the server) is replayed in this process: the offer and
  trickle paths accept or refuse each with a 4xx reason; over HTTP, no input gets a 5xx.
- Each harness then fuzzes for `MERIDIAN_FUZZ_SECONDS` (default 20; the HTTP harness for
  twice that) starting from the corpus and from the random seed `MERIDIAN_FUZZ_SEED`
  (default 1, so that `make test` is repeatable; fuzz/README.md runs longer campaigns from
  new seeds). What it finds goes to a temporary folder, not into the repository. A crash
  fails the test with the fuzzer's report and the input that caused it. The run's figures
  are printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import traceback
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from fuzz.common import check_offer, check_sdpfrag, corpus, decoded, hostile_settings
from fuzz.http_raw import RawClient
from server.app import create_app

ROOT = Path(__file__).resolve().parent.parent
FUZZ_SECONDS = int(os.environ.get("MERIDIAN_FUZZ_SECONDS", "20"))
FUZZ_SEED = int(os.environ.get("MERIDIAN_FUZZ_SEED", "1"))
CHECKS: dict[str, Callable[[str], str]] = {"offer": check_offer, "sdpfrag": check_sdpfrag}


@pytest.mark.parametrize("harness", sorted(CHECKS))
def test_the_parser_corpus_replays_cleanly(harness: str) -> None:
    check = CHECKS[harness]
    failures = []
    for path in corpus(harness):
        text = decoded(path.read_bytes())
        if text is None:
            continue
        try:
            check(text)
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            failures.append(
                f"{path.name}: {type(exc).__name__}: {exc} ({where.filename}:{where.lineno})"
            )
    assert len(corpus(harness)) >= 5
    assert not failures, "\n".join(failures)


@pytest.fixture
async def raw_client() -> AsyncIterator[RawClient]:
    # Sessions that never connect stay ({session} stands for one of them).
    app = create_app(hostile_settings(connect_timeout=3600.0), CollectorRegistry())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    assert server.port is not None
    try:
        yield RawClient(app, server.port)
    finally:
        await server.close()


@pytest.mark.timeout(300)
async def test_the_http_corpus_replays_cleanly(raw_client: RawClient) -> None:
    failures = []
    for path in corpus("http"):
        answer = await raw_client.send(path.read_bytes())
        if answer.status >= 500:
            failures.append(f"{path.name}: HTTP {answer.status} for {answer.request[:200]!r}")
    assert len(corpus("http")) >= 5
    assert not failures, "\n".join(failures)


def fuzz_stats(output: str) -> dict[str, str]:
    return dict(re.findall(r"^stat::(\w+):\s+(\S+)", output, flags=re.M))


@pytest.mark.parametrize("harness", ["offer", "sdpfrag", "http"])
@pytest.mark.timeout(FUZZ_SECONDS * 2 + 240)
def test_a_bounded_fuzz_run_finds_nothing(
    harness: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seconds = FUZZ_SECONDS * (2 if harness == "http" else 1)
    found = tmp_path / "found"
    found.mkdir()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            f"fuzz.fuzz_{harness}",
            str(found),
            str(ROOT / "fuzz" / "corpus" / harness),
            f"-max_total_time={seconds}",
            f"-seed={FUZZ_SEED}",
            "-print_final_stats=1",
            "-timeout=30",
            "-rss_limit_mb=3072",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=seconds + 180,
        check=False,
    )
    text = run.stdout.decode(errors="replace")
    lines = [line for line in text.splitlines() if not line.startswith("INFO: Instrumenting")]
    stats = fuzz_stats(text)
    seed = re.search(r"INFO: Seed: (\d+)", text)
    crashes = sorted(
        p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-"))
    )
    with capsys.disabled():
        print(
            f"\nfuzz {harness}: {stats.get('number_of_executed_units', '?')} inputs in "
            f"{seconds} s ({stats.get('average_exec_per_sec', '?')}/s), "
            f"{stats.get('new_units_added', '?')} new inputs on "
            f"{len(corpus(harness))} kept, peak {stats.get('peak_rss_mb', '?')} MB, "
            f"seed {seed[1] if seed else '?'}, exit {run.returncode}"
        )
    assert run.returncode == 0 and not crashes, "\n".join(lines[-80:])
