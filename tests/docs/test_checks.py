"""Each docs check fails on a page that drifted (so a green test_docs.py means something)."""

from __future__ import annotations

from pathlib import Path

from tests.docs import checks

LIVE = {
    "model_name": "mri-classifier",
    "model_version": 1,
    "predictions": [
        {"label": "glioma", "confidence": 0.9, "probabilities": {"glioma": 0.9}, "check": {"warning": False}}
    ],
}
CLASSES = ("glioma", "meningioma", "no_tumor", "pituitary")


def test_broken_links_and_anchors_are_found(tmp_path: Path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Deploying it\n\n## Deploying it\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n[fine](other.md#deploying-it-1) [self](#title) [web](https://example.com/x)\n"
        "[gone](docs/missing.md) [bad anchor](other.md#deploying) [bad self](#nowhere)\n"
        "`[in code](not-checked.md)`\n"
    )
    problems = checks.link_problems(page)
    assert len(problems) == 3, problems
    assert any("docs/missing.md" in p for p in problems)
    assert any("other.md#deploying:" in p for p in problems) and any("#nowhere" in p for p in problems)


def test_slugs_follow_github():
    assert checks.slug("Two commands") == "two-commands"
    assert checks.slug("`make run` and MRI_HOST (v3)") == "make-run-and-mri_host-v3"
    assert checks.slug("What it is **not**: a device") == "what-it-is-not-a-device"


def test_unknown_make_targets_are_found():
    text = (
        "Run `make run` or `make HOST=0.0.0.0 serve-now`.\n\n```bash\nmake -j2 images ENGINE=docker\nmake tset\n```\n"
    )
    assert checks.make_problems(text, {"run", "images"}) == [
        ": `make serve-now`: no such target in the Makefile",
        ": `make tset`: no such target in the Makefile",
    ]
    assert {"run", "test", "images", "venv"} <= checks.make_targets()


def test_unknown_mri_names_are_found():
    assert checks.name_problems("set `MRI_API_KEY` and MRI_APIKEY_OLD", {"MRI_API_KEY"}) == [
        ": MRI_APIKEY_OLD: no such setting or variable"
    ]
    assert {"MRI_API_KEY", "MRI_HOST", "MRI_MODEL_DIR"} <= checks.names_in_code()


def test_unknown_commands_and_flags_are_found():
    text = (
        "```bash\nmri-classifier serve --model-dir m \\\n    --prot 9000 | tee log\n"
        "mri-classifier sagemaker deploy --endpoint e\nmri-classifier servce --x\n```\n"
    )
    invocations = list(checks.commands_with_flags(text))
    assert (("serve",), {"--model-dir", "--prot"}) in invocations
    assert (("sagemaker", "deploy"), {"--endpoint"}) in invocations
    helps = {("serve",): "usage: serve [--model-dir M] [--port P]", ("sagemaker", "deploy"): "usage: [--endpoint E]"}
    problems = checks.flag_problems(invocations, lambda path: helps.get(path, "unknown"))
    assert problems == [": `mri-classifier serve --prot`: no such flag"]
    assert checks.flag_problems([(("fetch-modle",), set())], lambda path: "error: unknown command") == [
        ": `mri-classifier fetch-modle`: no such command"
    ]


def test_shell_blocks_that_break_are_found():
    good = "```bash\ncurl -F file=@a.png \\\n    http://127.0.0.1:8080/predict\n```\n"
    assert checks.shell_problems(good) == []
    trailing = "```bash\naws sagemaker create-transform-job \\   # the job\n    --instance-type ml.m5.large\n```\n"
    assert "backslash" in checks.shell_problems(trailing)[0]
    broken = "```sh\nif true; then echo\n```\n"
    assert "does not parse" in checks.shell_problems(broken)[0]
    assert checks.shell_problems("```python\nif x:\n```\n") == []  # not shell


def test_example_answers_that_drifted_are_found():
    good = '{"model_name": "mri-classifier", "model_version": 3,\n "predictions": [{"label": "glioma", ...}]}'
    assert checks.example_problems(good, LIVE, CLASSES, 3) == []
    stale = (
        '{"model_name": "m", "model_version": 2, "predictions": [{"label": "tumour", "score": 0.3,\n'
        ' "probabilities": {"glioma": 0.9, "no_tumour": 0.1}}]}'
    )
    problems = checks.example_problems(stale, LIVE, CLASSES, 3, required={"check"})
    assert any("'score' is not in" in p for p in problems)
    assert any("lacks the answer's field 'check'" in p for p in problems)
    assert any("'tumour'" in p for p in problems) and any("'no_tumour'" in p for p in problems)
    assert any("model_version 2" in p for p in problems)
