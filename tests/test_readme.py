"""README.md is the front door: its promises about itself, and its Python example run as written (smaller)."""

import pathlib
import re

import doc_examples
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_is_short_and_its_first_code_block_holds_the_two_commands():
    assert len(README.splitlines()) <= 200
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(first_block) == 2
    assert first_block[0].endswith("python -m launch.main --config configs/default.py --workdir runs/default")
    assert "python -m pytest" in first_block[1]


def test_readmes_library_example_runs(capsys):
    """The example as printed, with its sizes shrunk (each shrink must find its text, so the example cannot
    drift from what is run here): train, register a sampler, sample and evaluate with two samplers."""
    doc_examples.run_example(
        "README.md",
        {
            "synthetic.SyntheticConfig()": "synthetic.SyntheticConfig(base_examples=40, novel_examples=20)",
            "schedule.linear_schedule(1000)": "schedule.linear_schedule(100)",
            "train.TrainConfig(steps=2000)": "train.TrainConfig(steps=20)",
            "count=600": "count=8",
        },
        registered_sampler="ddim_eta_one",
    )
    printed = capsys.readouterr().out
    assert printed.count("MethodResult(method=") == 2 and "ddim_eta_one" in printed
    for accuracy in re.findall(r"accuracy=([0-9.]+)", printed):
        assert 0.0 <= float(accuracy) <= 1.0


@pytest.mark.parametrize("page", ["findings", "datasets", "running", "library", "differentiable_samplers", "performance", "reference"])
def test_every_page_the_readme_links_exists(page):
    assert f"docs/{page}.md" in README and (ROOT / "docs" / f"{page}.md").is_file()
