"""``PATCH /v1/tasks/{id}/speakers``: give diarized speakers names, without re-running models.

The stored transcript keeps its speaker ids (``speaker_1``...) on every segment; a
rename sets ``speakers[].name``, which every rendering (txt/json/srt/vtt, OpenAI
``diarized_json``, the speaker-turn text) shows instead of ``Speaker N``. The
summary was written from ``Speaker N: ...`` lines, so the old display names in its
text are replaced by the new ones.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import CallerDep, DoorDep
from app.api.errors import APIError
from app.api.forms import validate_body
from app.core.safe_text import one_line
from app.core.schemas import Summary, Transcript
from app.core.task_vocabulary import TaskStatus
from app.speech.diarize import display_names, rename, rename_in_text
from app.tasks.views import TaskView, task_view

router = APIRouter(tags=["tasks"])


#: The longest name, once normalised; what is sent may be a little longer (spaces, marks).
MAX_NAME = 100
SpeakerId = Annotated[str, Field(min_length=1, max_length=64)]
RawName = Annotated[str, Field(max_length=4 * MAX_NAME)]


class SpeakerNames(BaseModel):
    """Speaker id -> name; ``null`` or ``""`` goes back to ``Speaker N``.

    Names are stored normalised (``app/core/safe_text.py``): NFC, one line, no control
    or bidi characters, spaces collapsed.
    """

    names: dict[SpeakerId, RawName | None] = Field(
        ...,
        min_length=1,
        max_length=20,
        examples=[{"speaker_1": "Maria", "speaker_2": "Tom"}],
    )


def _rerender(result: dict[str, Any], names: dict[str, str | None]) -> dict[str, Any]:
    transcript = Transcript.model_validate(result["transcript"])
    before = display_names(transcript)
    renamed = rename(transcript, names)  # KeyError: an id the transcript does not have
    after = display_names(renamed)
    changes = {before[k]: after[k] for k in before if before[k] != after.get(k, before[k])}
    out = dict(result)
    out["transcript"] = renamed.model_dump(mode="json", exclude_none=False)
    if changes and result.get("summary"):
        summary = Summary.model_validate(result["summary"])
        out["summary"] = summary.model_copy(
            update={
                "summary": rename_in_text(summary.summary, changes),
                "key_points": [rename_in_text(x, changes) for x in summary.key_points],
                "action_items": [rename_in_text(x, changes) for x in summary.action_items],
                "chapters": [
                    c.model_copy(
                        update={
                            "title": rename_in_text(c.title, changes),
                            "gist": rename_in_text(c.gist, changes),
                        }
                    )
                    for c in summary.chapters
                ],
            }
        ).model_dump(mode="json")
    return out


@router.patch(
    "/v1/tasks/{task_id}/speakers",
    response_model=TaskView,
    summary="Name a diarized task's speakers; transcripts and summary re-render with the names",
    responses={
        404: {"description": "No such task"},
        409: {"description": "Not succeeded, or not diarized"},
        422: {"description": "Unknown speaker id or bad body"},
    },
)
async def rename_speakers(
    task_id: str, body: dict[str, Any], caller: CallerDep, door: DoorDep
) -> TaskView:
    req = validate_body(SpeakerNames, body, what="body")
    names: dict[str, str | None] = {}
    for speaker, raw in req.names.items():
        name = one_line(raw or "")
        if len(name) > MAX_NAME:
            raise APIError(
                422,
                "invalid_name",
                f"names.{speaker}: a name is at most {MAX_NAME} characters",
                extra={"field": f"names.{speaker}"},
            )
        names[speaker] = name or None
    for _ in range(3):  # optimistic: retry if another rename landed in between
        task = await door.get(task_id, caller.tenant_id)
        if task is None:
            raise APIError(404, "task_not_found", f"no task '{task_id}'")
        if task.status != TaskStatus.SUCCEEDED or not task.result:
            raise APIError(
                409, "task_not_succeeded", f"the task is {task.status}; speakers exist once done"
            )
        if not task.result.get("transcript", {}).get("speakers"):
            raise APIError(
                409, "not_diarized", "the task was not diarized; submit it with diarize=true"
            )
        try:
            new = _rerender(task.result, names)
        except KeyError as exc:
            raise APIError(
                422, "unknown_speaker", f"the transcript has no speaker {exc.args[0]}"
            ) from None
        updated = await door.replace_result(task, new, task.result)
        if updated is not None:
            return task_view(updated)
    raise APIError(409, "concurrent_update", "the task changed while renaming; try again")
