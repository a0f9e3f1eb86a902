"""API names in resource paths are read in lower case only: the router refuses any other
spelling (the gateway's exact checks would miss it, Azure may not), and `unmetered_work`
folds the case itself as a second line."""

from __future__ import annotations

import pytest

from azure_openai_proxy.errors import RouteNotFound
from azure_openai_proxy.gateway.budgethold import unmetered_work
from azure_openai_proxy.routing import classify


@pytest.mark.parametrize("path", [
    "/v1/fine_tuning/Jobs", "/openai/fine_tuning/JOBS", "/v1/fine_tuning/alpha/Graders/run",
    "/v1/threads/thread_1/Runs", "/v1/threads/t/runs/r/Submit_Tool_Outputs",
    "/v1/files/file-1/Content", "/v1/vector_stores/vs_1/File_Batches", "/v1/batches/b/Cancel",
    # a trailing dot, which a front end on Windows' path rules drops (review14's suspect)
    "/v1/fine_tuning/jobs.", "/v1/threads/t/runs..", "/v1/files/file-1.", "/v1/batches/b/cancel.",
    "/v1/responses/Compact", "/v1/responses/Input_Tokens",
    "/v1/fine_tuning/checkpoints/c/Permissions",
])
def test_an_api_name_in_other_letters_is_no_route(path: str) -> None:
    with pytest.raises(RouteNotFound):
        classify("POST", path, "/v1")


@pytest.mark.parametrize("path", [
    "/v1/files/FILE-ABC", "/v1/files/Jobsx", "/v1/assistants/asst_AbCdEf",
    "/v1/threads/Thread_Runs/messages", "/v1/fine_tuning/jobs/ftjob-AB/events",
])
def test_ids_keep_their_letters(path: str) -> None:
    target = classify("GET", path, "/v1")
    assert target.kind == "resource"
    assert "/" + target.operation == path[len("/v1"):]


@pytest.mark.parametrize(("operation", "what"), [
    ("fine_tuning/Jobs", "Fine-tuning jobs"),
    ("fine_tuning/jobs/ftjob-1/RESUME", "Fine-tuning jobs"),
    ("fine_tuning/alpha/Graders/Run", "Grader runs"),
    ("threads/Runs", "Assistants runs"),
    ("threads/t/runs/r/Submit_Tool_Outputs", "Assistants runs"),
])
def test_unmetered_work_folds_the_case_of_its_names(operation: str, what: str) -> None:
    found = unmetered_work(operation, {})
    assert found is not None and found[0] == what
