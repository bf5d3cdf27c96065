"""A1111's selectable scripts through `script_name` / `script_args` (a1111_features.md §3): the table of the
scripts each tab offers, the dispatch of a request to its script, and the `/scripts` and `/script-info`
listings. Each script runs its Jobs through the dialect's own request path (runner.py) and answers in A1111's
shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...base import Call, Reply
from ..errors import ScriptNotFound
from . import prompt_matrix, prompts_from_file, sd_upscale, xyz
from .args import Arg
from .runner import ScriptContext

if TYPE_CHECKING:
    from ..api import A1111Dialect

TASKS = ("txt2img", "img2img")


@dataclass(frozen=True)
class Script:
    title: str  # A1111's title(); the API matches it in any case, the listings show it lowercased
    args: tuple[Arg, ...]
    run: Callable[[ScriptContext, list[Any]], Awaitable[Reply]]
    tasks: tuple[str, ...] = TASKS

    @property
    def name(self) -> str:
        return self.title.lower()


# In A1111's load order (the listings keep it).
SCRIPTS: tuple[Script, ...] = (
    Script(prompt_matrix.TITLE, prompt_matrix.ARGS, prompt_matrix.run),
    Script(prompts_from_file.TITLE, prompts_from_file.ARGS, prompts_from_file.run),
    Script(sd_upscale.TITLE, sd_upscale.ARGS, sd_upscale.run, ("img2img",)),
    Script(xyz.TITLE, xyz.ARGS, xyz.run),
)


def scripts_for(task: str) -> list[Script]:
    return [s for s in SCRIPTS if task in s.tasks]


def find_script(task: str, name: str) -> Script:
    """The tab's script titled `name` (any case), or A1111's 422."""
    wanted = str(name).strip().lower()
    for script in scripts_for(task):
        if script.name == wanted:
            return script
    raise ScriptNotFound(f"Script '{name}' not found")


def check_alwayson(task: str, request) -> None:
    """A1111's 422 for a selectable script named in `alwayson_scripts` (other titles are plan.py's)."""
    for title in request.alwayson_scripts or {}:
        if any(s.name == str(title).strip().lower() for s in scripts_for(task)):
            raise ScriptNotFound("Cannot have a selectable script in the always on scripts params")


async def run_script(api: A1111Dialect, operation: str, request, call: Call) -> Reply:
    """A txt2img/img2img request with a `script_name`: the script runs the request itself."""
    script = find_script(operation, request.script_name)
    context = await ScriptContext.start(api, operation, request, call)
    return await script.run(context, list(request.script_args or []))


def scripts_list() -> dict[str, list[str]]:
    """GET /sdapi/v1/scripts."""
    return {task: [s.name for s in scripts_for(task)] for task in TASKS}


def script_info() -> list[dict[str, Any]]:
    """GET /sdapi/v1/script-info: one entry per script per tab."""
    return [
        {"name": s.name, "is_alwayson": False, "is_img2img": task == "img2img",
         "args": [a.info(task) for a in s.args]}
        for task in TASKS
        for s in scripts_for(task)
    ]


__all__ = ["SCRIPTS", "Script", "check_alwayson", "find_script", "run_script", "script_info", "scripts_for", "scripts_list"]
