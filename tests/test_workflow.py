"""The GitHub Actions workflow (.github/workflows/book.yml) does what the README promises:
a GPU runner tests, rebuilds and publishes the book; a GitHub-hosted runner runs the tests."""

from __future__ import annotations

import re
import shlex
import subprocess
from typing import Any

import pytest
import torch
import yaml

from .conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
GPU_LABELS = ["self-hosted", "linux", "x64", "gpu"]
ON_MAIN = {"github.event_name == 'push'", "github.ref == 'refs/heads/main'"}


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    return workflow.get("on") or workflow[True]


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job["steps"]


def step_index(job: dict[str, Any], predicate: Any, what: str) -> int:
    found = [i for i, step in enumerate(steps(job)) if predicate(step)]
    assert found, f"no step {what}"
    return found[0]


def runs(command: str) -> Any:
    """A predicate: the step's shell script runs ``command`` (as whole words)."""
    pattern = re.compile(r"(^|[\s;&|(])" + re.escape(command) + r"($|[\s;&|)])", re.M)
    return lambda step: bool(pattern.search(step.get("run", "")))


def uses(action: str) -> Any:
    return lambda step: step.get("uses", "").split("@")[0] == action


def conditions(expression: str) -> set[str]:
    """The clauses of an `a && b && c` expression (no `||` allowed)."""
    assert "||" not in expression, expression
    return {c.strip() for c in expression.replace("${{", "").replace("}}", "").split("&&")}


def makefile_recipe(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(rf"{re.escape(target)}\s*:", line)),
                 None)  # fmt: skip
    assert start is not None, (
        f"the workflow runs `make {target}` but the Makefile has no `{target}:` target"
    )
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_runs_on_pushes_to_main_and_on_pull_requests(workflow):
    on = triggers(workflow)
    assert on["push"]["branches"] == ["main"]
    assert "pull_request" in on
    assert not (on["pull_request"] or {}).get("branches"), "every pull request is checked"


def test_gpu_job_runs_on_the_documented_self_hosted_labels(workflow):
    gpu = workflow["jobs"]["gpu"]
    assert gpu["runs-on"] == GPU_LABELS
    header = WORKFLOW.read_text().split("\nname:")[0]  # the comment block at the top
    assert "[self-hosted, linux, x64, gpu]" in header
    assert "./config.sh" in header and "--labels gpu" in header
    # A self-hosted runner must not execute code from forks.
    assert "github.event.pull_request.head.repo.full_name == github.repository" in gpu["if"]
    config = yaml.safe_load((ROOT / ".github" / "actionlint.yaml").read_text())
    assert config["self-hosted-runner"]["labels"] == ["gpu"]


def test_gpu_job_builds_in_the_gpu_profile(workflow):
    assert workflow["jobs"]["gpu"]["env"]["D2L_PROFILE"] == "gpu"
    for step in steps(workflow["jobs"]["gpu"]):
        assert "D2L_PROFILE" not in str(step.get("env", {})), "set once, at job level"


def test_gpu_job_sets_up_checks_cuda_builds_everything_then_tests(workflow):
    gpu = workflow["jobs"]["gpu"]
    setup = step_index(gpu, runs("make setup"), "running `make setup`")
    cuda = step_index(gpu, lambda s: "torch.cuda.is_available()" in s.get("run", ""),
                      "checking torch.cuda.is_available()")  # fmt: skip
    test = step_index(gpu, runs("make test"), "running `make test`")
    book = step_index(gpu, runs("make book-ci"), "running `make book-ci`")
    # the clean build first: the tests' own book build then reuses its execution cache
    assert setup < cuda < book < test
    recipe = " ".join(makefile_recipe("book-ci"))
    assert "D2L_EXECUTE=force" in recipe, f"book-ci must execute every page afresh: {recipe}"


def test_make_book_ci_is_a_full_build_where_warnings_are_errors():
    recipe = makefile_recipe("book-ci")
    builds = [shlex.split(line) for line in recipe if "jupyter-book build" in line]
    assert builds, f"book-ci does not run `jupyter-book build`: {recipe}"
    for args in builds:
        assert "--all" in args and "-W" in args, args
    assert not any("D2L_PROFILE=" in line for line in recipe), "the job chooses the profile"


def test_cuda_check_fails_clearly_without_a_gpu(workflow):
    """Run the workflow's own check here: it must pass exactly when CUDA is present."""
    gpu = workflow["jobs"]["gpu"]
    step = steps(gpu)[step_index(gpu, lambda s: "torch.cuda.is_available()" in s.get("run", ""),
                                 "checking CUDA")]  # fmt: skip
    assert (ROOT / ".venv" / "bin" / "python").exists(), "run `make setup` first"
    result = subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    if torch.cuda.is_available():
        assert result.returncode == 0, result.stdout + result.stderr
        assert "CUDA" in result.stdout
    else:
        assert result.returncode != 0
        assert "::error::" in result.stdout and "sees no CUDA device" in result.stdout


def test_report_goes_into_the_html_and_the_job_summary(workflow):
    gpu = workflow["jobs"]["gpu"]
    i = step_index(gpu, lambda s: "tools/exec_report.py" in s.get("run", ""),
                   "running tools/exec_report.py")  # fmt: skip
    script = steps(gpu)[i]["run"]
    assert i > step_index(gpu, runs("make book-ci"), "building the book")
    assert re.search(r"--markdown\s+_build/html/\S+\.md", script)
    assert re.search(r"--json\s+_build/html/\S+\.json", script)
    assert re.search(r'>>\s*"?\$GITHUB_STEP_SUMMARY"?', script)
    # Every option the step passes exists in the script.
    help_text = subprocess.run([str(ROOT / ".venv" / "bin" / "python"),
                                str(ROOT / "tools" / "exec_report.py"), "--help"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    for option in set(re.findall(r"(--[a-z][a-z-]*)", script)):
        assert option in help_text, option


def test_html_is_uploaded_after_the_report(workflow):
    gpu = workflow["jobs"]["gpu"]
    i = step_index(gpu, lambda s: uses("actions/upload-artifact")(s)
                   and s["with"]["path"] == "_build/html", "uploading _build/html")  # fmt: skip
    assert "if" not in steps(gpu)[i], "pull requests get the HTML too"
    assert i > step_index(gpu, lambda s: "tools/exec_report.py" in s.get("run", ""), "report")


def test_pages_are_deployed_only_from_main(workflow):
    gpu, deploy = workflow["jobs"]["gpu"], workflow["jobs"]["deploy"]
    upload = steps(gpu)[step_index(gpu, uses("actions/upload-pages-artifact"), "for Pages")]
    assert upload["with"]["path"] == "_build/html"
    assert conditions(upload["if"]) == ON_MAIN
    assert conditions(deploy["if"]) == ON_MAIN
    assert deploy["needs"] == "gpu" or deploy["needs"] == ["gpu"]
    assert any(uses("actions/deploy-pages")(s) for s in steps(deploy))
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert deploy["concurrency"]["group"] and deploy["concurrency"]["cancel-in-progress"] is False
    # Only the deploy job may write to Pages.
    assert workflow["permissions"] == {"contents": "read"}
    assert "permissions" not in gpu and "permissions" not in workflow["jobs"]["cpu"]


def test_cpu_job_runs_ci_run_on_a_github_hosted_runner(workflow):
    cpu = workflow["jobs"]["cpu"]
    assert cpu["runs-on"].startswith("ubuntu-"), cpu["runs-on"]
    assert cpu["timeout-minutes"] == 90
    assert "if" not in cpu, "runs for every push and pull request, forks included"
    assert any(runs(".ci/run")(s) for s in steps(cpu))
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)
    # The Makefile apt-installs Fashion-MNIST and Chromium only as root: the job either
    # runs as root in a Debian container or installs them with sudo first.
    image = (cpu.get("container") or {}).get("image", "")
    scripts = "\n".join(s.get("run", "") for s in steps(cpu))
    assert "bookworm" in image or all(
        re.search(rf"sudo apt-get install .*{p}", scripts)
        for p in ("dataset-fashion-mnist", "chromium")
    )
    assert "npm" in scripts, "make vendor needs npm"


def test_every_action_is_pinned(workflow):
    for name, job in workflow["jobs"].items():
        for step in steps(job):
            if "uses" in step:
                ref = step["uses"].split("@")[1]
                assert re.fullmatch(r"v\d+(\.\d+)*|[0-9a-f]{40}", ref), f"{name}: {step['uses']}"
