"""The gateway cannot listen where it is told: one line and a non-zero exit."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.processes import Process, cli
from tests.support import reserved_socket


def test_a_port_in_use_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # The bind's OSError went up through the event loop: a 30-line traceback.
    config = tmp_path / "config.yaml"
    with reserved_socket() as taken:
        taken.listen()
        port = taken.getsockname()[1]
        config.write_text(f'listen: "127.0.0.1:{port}"\ndeployment_config:\n'
                          '  - {model_name: gpt-4o, deployment_name: d, '
                          'endpoint: "http://127.0.0.1:9"}\n')
        process = Process(cli("-c", str(config)))
        try:
            assert process.popen.wait(30) != 0
            output = process.output()
        finally:
            process.stop()
            os.unlink(process.log.name)
    # Found before any worker starts (workers.port_refusal, merged beside this check),
    # or at the bind (runner.start_server): one line either way.
    assert re.search(rf"cannot listen on 127\.0\.0\.1:{port}: (\[Errno \d+\] )?"
                     "Address already in use", output), output
    assert "Traceback" not in output
