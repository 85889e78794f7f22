"""The `embedpipe` command: stages (run, preprocess, train, embed) and tools (init, neighbors, index,
cluster, projector, plot, runs, compare, evaluate, report).

Exit status: 0 success; 1 a job failed (one line: the stage, the error, the log file); 2 bad
config or arguments (one line naming the fix, before any work); 130 interrupted (one line with the
command that resumes the run).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable, NoReturn, Sequence

from pipelines.cli.console import Console
from pipelines.cli.parser import build_parser
from pipelines.core.errors import UsageError
from pipelines.core.quiet import quiet_native_logs
from pipelines.core.stage_log import terminal_stream

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
BEAM_COMMANDS = ("run", "preprocess", "embed")


def _commands() -> dict[str, Callable]:
    from pipelines.cli import stage_commands, tool_commands
    return {"run": stage_commands.cmd_run, "preprocess": stage_commands.cmd_preprocess,
            "train": stage_commands.cmd_train, "embed": stage_commands.cmd_embed,
            "neighbors": tool_commands.cmd_neighbors, "index": tool_commands.cmd_index,
            "cluster": tool_commands.cmd_cluster, "projector": tool_commands.cmd_projector,
            "plot": tool_commands.cmd_plot, "runs": tool_commands.cmd_runs, "compare": tool_commands.cmd_compare,
            "evaluate": tool_commands.cmd_evaluate, "init": tool_commands.cmd_init,
            "report": tool_commands.cmd_report}


def _first_line(error: BaseException, limit: int = 400) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    quiet_native_logs()
    # embedpipe uses Keras 2 (tf_keras) throughout, as tf.Transform does. Without this, `import
    # tensorflow` also loads Keras 3, which imports scikit-learn and matplotlib: 1.5-1.7 s more
    # start-up for every command that loads TensorFlow (python -X importtime, here).
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console(terminal_stream())
    try:
        args, beam_args = build_parser().parse_known_args(argv)
        takes_beam = args.command in BEAM_COMMANDS or getattr(args, "keys_file", None)
        if beam_args and not takes_beam:
            raise UsageError(f"unrecognized arguments: {' '.join(beam_args)} (see `embedpipe {args.command} --help`)")
    except SystemExit as done:  # --help printed its text
        return int(done.code or 0)
    except UsageError as error:
        console.line(f"embedpipe: error: {error}")
        return EXIT_USAGE
    console.verbose = args.verbose
    console.configure_logging()
    try:
        return _commands()[args.command](args, beam_args, console)
    except UsageError as error:
        console.line(f"embedpipe: error: {error}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        where = f" during {console.stage_name}" if console.stage_name else ""
        hint = f"; resume with: {console.resume_hint}" if console.resume_hint else ""
        console.line(f"embedpipe: interrupted{where}{hint}")
        return EXIT_INTERRUPTED
    except Exception as error:  # a failed job: one line; the traceback is in the log (and with -v)
        if console.stage_name is None:  # a stage logged its own traceback into its log file
            logging.getLogger(__name__).error("%s failed", args.command, exc_info=True)
        stage = console.stage_name or args.command
        log = f" (log: {console.log_path})" if console.stage_name and console.log_path else ""
        console.line(f"embedpipe: {stage} failed: {type(error).__name__}: {_first_line(error)}{log}")
        return EXIT_FAILED
    finally:
        console.close()


def run() -> NoReturn:
    """The `embedpipe` command: `main`, then an exit without the interpreter's teardown.

    Tearing down an interpreter that loaded TensorFlow took 1.5-2.4 s here (its objects and
    modules finalised one by one). When `main` returns, every file is closed and every run
    directory lock released; logs and standard streams are flushed here, then the process ends.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
