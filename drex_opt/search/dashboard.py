"""optuna-dashboard for drex-opt studies: the server, and the notes and files each trial
and study carries into it.

Trial notes and files are recorded while the trial is still RUNNING: an RDB storage
refuses any change to a finished trial's attributes, and artifact metadata is a trial
attribute. (Notes themselves live in the study's system attributes, so the study note
can be written at any time.)
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from drex_opt.errors import UserError
from drex_opt.rules.behavior import STORED
from drex_opt.rules.objectives import BASELINE_ROLE, OBJECTIVES, show
from drex_opt.search import storage as storage_mod

log = logging.getLogger(__name__)

# Server storages have no file to sit beside; this folder is relative to the working directory.
SERVER_ARTIFACTS = Path("studies/artifacts")
# The run folder's files shown on each trial's page, with the type the browser needs to display them.
TRIAL_FILES = (("summary.json", "application/json"), ("train.log", "text/plain"))


def artifact_dir(url: str) -> Path:
    """The folder holding the artifacts of the studies in storage ``url``.

    ``sqlite:///DIR/NAME.db`` → ``DIR/NAME-artifacts``; ``journal:PATH`` (or a bare
    ``.log``/``.jsonl`` path) → ``PATH-artifacts``; in-memory SQLite and server URLs →
    ``studies/artifacts``. Several hosts see each other's files only when that folder is
    on a shared file system.
    """
    journal = storage_mod.journal_path(url)
    if journal is not None:
        return Path(f"{journal}-artifacts")
    db = storage_mod.sqlite_path(url)
    return db.with_name(f"{db.stem}-artifacts") if db is not None else SERVER_ARTIFACTS


def artifact_store_for(url: str) -> FileSystemArtifactStore:
    """A file-system artifact store in :func:`artifact_dir` (created if missing)."""
    folder = artifact_dir(url)
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(folder)


# ---------------------------------------------------------------- notes
def trial_note(number: int, attrs: dict, summary: dict, run_dir: Path, outcome: str,
               objectives=OBJECTIVES) -> str:
    """The markdown note of one trial: outcome, the study's objectives, behaviour, clamps, run folder."""
    lines = [f"## Trial {number}{' (baseline)' if attrs.get('role') == BASELINE_ROLE else ''}", "",
             f"**Outcome:** {outcome}", ""]
    lines += ["| objective | value |", "|---|---|"]
    lines += [f"| {name} | {show(name, summary.get(name))} |" for name in objectives]
    analysis = summary.get("behavioral_analysis") or attrs.get("behavioral_analysis") or {}
    lines += ["", "### Behaviour", "",
              f"severity **{analysis.get('severity') or '-'}**, next focus **{analysis.get('next_focus') or '-'}**", ""]
    lines += [f"- {insight}" for insight in analysis.get("insights") or []] or ["- no insight"]
    adjustments = attrs.get("clamp_adjustments") or []
    lines += ["", "### Clamp adjustments", ""]
    lines += [f"- {a}" for a in adjustments] or ["- none"]
    lines += ["", "### Run", "", f"- folder: `{run_dir}`",
              f"- status: {summary.get('status', '-')}" + (f" ({summary['error']})" if summary.get("error") else "")]
    steps, wall = summary.get("agent_steps"), summary.get("wall_time_s")
    if isinstance(steps, (int, float)):
        lines.append(f"- agent steps: {steps:,.0f}")
    if isinstance(wall, (int, float)):
        lines.append(f"- wall time: {wall:.1f} s")
    return "\n".join(lines) + "\n"


def study_note(plan) -> str:
    """The markdown note of a study: focus, the space's theory, budget, command."""
    focus = plan.focus if plan.space_focus == plan.focus else f"{plan.focus} (searching {plan.space_focus}'s space)"
    lines = [f"## {plan.study_name}", "", f"**Focus:** {focus}" + (f", severity {plan.severity}" if plan.severity else ""),
             "", "### Theory", "", plan.space.description.strip(), "", "### Budget", "",
             f"- {plan.timesteps:,} agent steps per trial",
             f"- {plan.trials} trials planned by the first command ({plan.startup_trials} random start-up trials)",
             f"- {plan.repeats} extra seeds for the top Pareto trials",
             f"- baseline `{plan.baseline_name}`, environment `{plan.env}`, seed {plan.seed}"]
    if plan.warm_start is not None:
        seen = f" ({plan.warm_start_steps:,} agent steps trained)" if plan.warm_start_steps is not None else ""
        lines.append(f"- every trial continues the drone in `{plan.warm_start}`{seen}; trial 0 continues it unchanged")
    if plan.warm_start_declined:
        lines.append(f"- {plan.warm_start_declined}")
    reading = plan.reading
    if reading is not None:
        used = "stored in the run's summary" if reading.source == STORED else "drex-opt's rules"
        lines += ["", f"**Analysis:** {used} (run `{plan.from_run}`)"]
        lines += [f"- {line}" for line in reading.disagreement]
    if plan.insights:
        lines += ["", "### Why this focus", ""] + [f"- {i}" for i in plan.insights]
    lines += ["", "### Command", "", f"`{' '.join(plan.command)}`"]
    return "\n".join(lines) + "\n"


def record_trial(trial: optuna.Trial, plan, summary: dict, run_dir: Path, outcome: str) -> None:
    """Attach the trial's dashboard note and its run folder's files as artifacts.

    Call while the trial is RUNNING (a finished trial cannot take artifacts). Never
    raises: the study must not lose a trial over its notes, so any error is logged as a
    warning. Missing run files are skipped.

    Args:
        outcome: one line, e.g. ``complete: grip 40.0%, ...``, ``pruned: <reason>``.
    """
    try:
        from optuna_dashboard import save_note  # pulls scikit-learn: imported when first needed

        save_note(trial, trial_note(trial.number, trial.user_attrs, summary, run_dir, outcome, plan.objectives))
    except Exception as exc:  # noqa: BLE001 - notes are a convenience, never a failure
        log.warning("trial %s: dashboard note not saved: %s", trial.number, exc)
    try:
        store = artifact_store_for(plan.storage_url)
        for name, mimetype in TRIAL_FILES:
            path = Path(run_dir) / name
            if path.is_file():
                upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype=mimetype)
    except Exception as exc:  # noqa: BLE001
        log.warning("trial %s: run files not attached for the dashboard: %s", trial.number, exc)


def record_study(study: optuna.Study, plan) -> None:
    """Attach the study's dashboard note (focus, theory, budget). Never raises."""
    try:
        from optuna_dashboard import save_note  # pulls scikit-learn: imported when first needed

        save_note(study, study_note(plan))
    except Exception as exc:  # noqa: BLE001
        log.warning("study %s: dashboard note not saved: %s", plan.study_name, exc)


# ---------------------------------------------------------------- server
def _check_port(host: str, port: int) -> None:
    """Refuse a port another process listens on, before the server prints it is starting."""
    if not 1 <= port <= 65535:
        raise UserError(f"--port must be in 1..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"cannot resolve --host {host}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # The server sets SO_REUSEADDR too: a port in TIME_WAIT is free, a listening one is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(storage: str | None, host: str, port: int, on_ready=None) -> None:
    """Run optuna-dashboard on the storage until Ctrl-C.

    Args:
        on_ready: called with (url, storage shown, artifact folder) just before serving.

    Raises:
        UserError: unreachable or missing storage, a port in use, a bad host.
    """
    url = storage_mod.storage_url(storage)
    opened = storage_mod.open_storage(url, create=False)
    _check_port(host, port)
    store = artifact_store_for(url)
    from optuna_dashboard import run_server  # pulls scikit-learn: imported when first needed

    if on_ready:
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"http://{shown}:{port}/", storage_mod.redact(url), artifact_dir(url))
    try:
        run_server(opened, host=host, port=port, artifact_store=store)
    except OSError as exc:  # lost a race for the port after the check
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
