"""The CLI on requests the system refuses, as a user runs it against a running stack: the error's
code and message, a non-zero exit, no traceback, no waiting out a timeout."""

from __future__ import annotations

import os
import subprocess

from workers.devstack import REPO_ROOT, Stack

WALLET = str(REPO_ROOT / ".venv" / "bin" / "wallet")


def run(stack: Stack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.client_env(), "COLUMNS": "200"}
    return subprocess.run([WALLET, *args], env=env, capture_output=True, text=True, check=False, timeout=timeout)


def test_account_create_via_kafka_shows_the_rejection_instead_of_waiting(stack: Stack) -> None:
    # --wait far beyond the subprocess timeout: only the rejection can end it in time.
    done = run(stack, "account", "create", "--via", "kafka", "--count", "5000", "--wait", "600")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "invalid_fields" in output and "exceeds the batch limit 1000" in output, output


def test_account_create_via_celery_shows_the_error_not_a_traceback(stack: Stack) -> None:
    done = run(stack, "account", "create", "--via", "celery", "--count", "5000")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "invalid_fields" in output and "exceeds the batch limit 1000" in output, output
    assert "Traceback" not in output and len(output.strip().splitlines()) <= 3, output


def test_send_a_negative_amount_is_refused_as_an_invalid_amount(stack: Stack) -> None:
    done = run(stack, "send", "0x00000000000000000000000000000000DeaDBeef", "-5")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "No such option" not in output, output
    assert "invalid_amount" in output and "whole number" in output and "-5" in output, output
    assert "Traceback" not in output, output
