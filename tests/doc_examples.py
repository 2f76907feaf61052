"""Running a page's Python example as printed, with its sizes shrunk, so that the example cannot drift from
what the tests run."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_example(page: str, shrinks: dict[str, str], registered_sampler: str) -> None:
    """Executes the first ```python block of `page` (a path from the repository root) with each text of
    `shrinks` replaced by its smaller value (each must be found), then removes the sampler the example
    registers from sampler.SAMPLERS, whether or not it ran to the end."""
    from metadiff_jax import sampler

    code = re.search(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S).group(1)
    for text, smaller in shrinks.items():
        assert text in code, text
        code = code.replace(text, smaller)
    try:
        exec(compile(code, page, "exec"), {})
    finally:
        sampler.SAMPLERS.pop(registered_sampler, None)
