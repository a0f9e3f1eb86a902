"""`azure-openai-proxy demo` with a listen address it cannot use (`--listen 8080`, a port
past 65535, `--emulator-listen foo`): one line naming the flag and exit 2, as the
gateway's own flags get, before anything listens. It was a pydantic ValidationError's
traceback, or a ValueError's from int()."""

from __future__ import annotations

import pytest

from azure_openai_proxy.cli import main


@pytest.mark.parametrize(("flags", "named"), [
    (["--listen", "8080"], "--listen"),
    (["--listen", "127.0.0.1:99999"], "--listen"),
    (["--listen", "localhost:http"], "--listen"),
    (["--emulator-listen", "foo"], "--emulator-listen"),
    (["--emulator-listen", "127.0.0.1:99999"], "--emulator-listen"),
    (["--emulator-listen", "127.0.0.1:"], "--emulator-listen"),
])
def test_an_address_the_demo_cannot_use_is_one_line(
        flags: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *flags]) == 2  # main: a traceback (ValidationError, ValueError)
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"azure-openai-proxy demo: {named} ") and "HOST:PORT" in err, err
