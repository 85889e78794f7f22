"""Beam pipelines as embedpipe runs them: options checked up front, the local runner pinned,
counters read back.

Without `--runner`, Beam 2.77's DirectRunner first tries the Prism runner, which downloads a Go
binary at run time (and falls back to the in-process runner when that fails). embedpipe never
downloads anything: without `--runner` it runs Beam's in-process FnApiRunner itself (the runner
every test and benchmark uses), honouring `--direct_num_workers` and `--direct_running_mode`. A
`--runner` given is checked against the runners Beam knows (short names, as Beam resolves them) and
passed through; a dotted class path is Beam's to import.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import difflib
import gc
import io

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.utils import shared

from pipelines.core.errors import UsageError

COUNTER_NAMESPACE = "embedpipe"
LOCAL_RUNNER = "FnApiRunner"


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    """Beam's options for these arguments, every one of them checked.

    Raises:
        UsageError: an option Beam does not know (with the closest one), or a bad value.
    """
    parsers = []
    options = PipelineOptions(beam_args)
    messages = io.StringIO()
    try:
        with contextlib.redirect_stderr(messages):
            options.get_all_options(add_extra_args_fn=parsers.append)
    except SystemExit:
        last = (messages.getvalue().strip().splitlines() or ["invalid Beam option"])[-1]
        raise UsageError(last.split("error: ", 1)[-1]) from None
    _, unknown = parsers[0].parse_known_args(beam_args)
    for argument in unknown:
        if argument == "--":
            continue
        known = [name for action in parsers[0]._actions for name in action.option_strings]
        close = difflib.get_close_matches(argument.split("=", 1)[0], known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(f"unrecognized option {argument}{hint}; see `embedpipe run --help`")
    _check_runner(options.view_as(StandardOptions).runner)
    return options


def _check_runner(runner: object) -> None:
    """A runner named by Beam's short name must be one Beam knows (as Beam resolves it: any case,
    "Runner" optional); a dotted class path is Beam's to import."""
    if not isinstance(runner, str) or not runner or "." in runner:
        return
    known = sorted({path.rsplit(".", 1)[-1] for path in StandardOptions.ALL_KNOWN_RUNNERS})
    short = {name.lower().removesuffix("runner"): name for name in known}
    if runner.lower().removesuffix("runner") in short:
        return
    close = difflib.get_close_matches(runner.lower().removesuffix("runner"), list(short), n=1)
    hint = f"did you mean {short[close[0]]}? " if close else ""
    raise UsageError(f"--runner {runner}: not a Beam runner ({hint}known: {', '.join(known)})")


def runner_name(options: PipelineOptions) -> str:
    """The runner a pipeline with these options runs on, as the manifest records it."""
    runner = options.view_as(StandardOptions).runner
    if runner:
        return runner if isinstance(runner, str) else type(runner).__name__
    direct = options.view_as(DirectOptions)
    workers = direct.direct_num_workers or 1
    return f"{LOCAL_RUNNER} ({direct.direct_running_mode}, {workers} worker{'' if workers == 1 else 's'})"


def runs_in_process(options: PipelineOptions) -> bool:
    """Whether a pipeline with these options runs on Beam's in-process runner (`make_pipeline`'s pinned
    one, or the DirectRunner named): its workers share this machine, and its shuffle is held in memory."""
    runner = options.view_as(StandardOptions).runner
    return not runner or (isinstance(runner, str) and runner.lower().removesuffix("runner") == "direct")


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A pipeline on the runner `options` names, or on the pinned in-process runner."""
    if options.view_as(StandardOptions).runner:
        return beam.Pipeline(options=options)
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle
    # As Beam's DirectRunner builds it, so DoFns see the pipeline options in their provision info.
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(
        pipeline_options=JobServiceHandle.encode_pipeline_options(options.get_all_options())))
    return beam.Pipeline(runner=fn_runner.FnApiRunner(provision_info=provision), options=options)


def run_pipeline(pipeline: beam.Pipeline) -> beam.runners.runner.PipelineResult:
    """Runs and waits; the result's counters are final.

    While the job runs, the objects that exist before it (the imported libraries, the pipeline) are
    left out of Python's garbage collection (`gc.freeze`): the in-process runner allocates enough
    to set off full collections, and each one walked those half-million objects again (2.0 s of a
    15 s preprocess of 1M rows). They are handed back to the collector when the job ends.
    """
    gc.freeze()
    try:
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        gc.unfreeze()
    return result


def release_memory() -> None:
    """Hands the memory a finished in-process job freed back to the system, so the next job in this
    process does not start on top of it: drops the object Beam's `shared` map keeps alive between
    bundles (as tf.Transform does when its pipeline ends), then a full garbage collection (the
    runner's structures form reference cycles that keep its buffers until one runs) and, where the
    C library is glibc, `malloc_trim` (freed heap pages otherwise stay with the process)."""
    shared.Shared().acquire(lambda: None)
    gc.collect()
    library = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(library), "malloc_trim", None) if library else None
    if trim is not None:
        trim(0)


def read_counters(result: beam.runners.runner.PipelineResult, names: tuple[str, ...] = (),
                  namespace: str = COUNTER_NAMESPACE) -> dict[str, int]:
    """Committed values of every counter in `namespace`; `names` appear as 0 when they never fired."""
    counts = {name: 0 for name in names}
    for counter in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
        name = counter.key.metric.name
        counts[name] = counts.get(name, 0) + (counter.committed or 0)
    return counts
