"""What a run tells people as it goes (the toolchain, layout, schedule, what the ranks left behind), for
``flows.run_suite``; what provenance needs of it is returned as well as printed."""

from __future__ import annotations

import sys

from logitsmatch.log import logger


def describe_layout(parallel: dict) -> str:
    """'tp2pp2dp2: 2 engines of TP2 x PP2' and the like, for people."""
    engine = " x ".join(f"{name}{size}" for name, size in (("TP", parallel["tensor"]), ("PP", parallel["pipeline"]))
                        if size > 1 or name == "TP")
    text = f"{parallel['layout']}: {parallel['data']} engine{'s' if parallel['data'] > 1 else ''} of {engine}"
    if parallel.get("expert", 1) > 1:
        text += f", experts EP{parallel['expert']} x ETP{parallel['expert_tensor']}"
    return text


def announce(suite, label: str, toolchain, candidate: bool, platform, plan: dict, weights, flags) -> None:
    """The run in a few lines before it starts: suite, toolchain, versions, ranks and layout, the weights' source
    (``weights``: a ``run_suite.Weights``), the flags the platform does not apply, and a timing-dependent schedule."""
    from logitsmatch.provenance import package_versions

    versions = package_versions()
    platform_label = platform.label(suite.model_args, suite.world_size)
    logger.info(f"suite {suite.name} | toolchain {label} | platform {platform_label}")
    logger.info(
        f"python {sys.version.split()[0]}, torch {versions['torch']}, megatron-core {versions['megatron-core']}"
        + (f" (candidate {label} of {toolchain.name})" if candidate else "")
    )
    ranks = f"{plan['world_size']} rank{'s' if plan['world_size'] != 1 else ''}"
    logger.info(f"{ranks} ({platform.backend}), layout {describe_layout(plan['parallel'])}, "
                f"dtype {plan['dtype']}, weights: {weights.record['source']}")
    for line in flags.lines(platform_label):
        logger.info(line.strip())
    schedule = request_schedule(plan)
    if schedule["timing_dependent"]:
        logger.warning(f"{schedule['prompts']} prompts over {plan['parallel']['data']} engines: each engine adds its "
                       "requests as they arrive, so its batch schedule depends on arrival timing")
    sys.stdout.flush()


def request_schedule(plan: dict) -> dict:
    """How requests reach the engines (see run.plan.hold_requests), as provenance records it."""
    engines, prompts = plan["parallel"]["data"], len(plan["schedule"]["submit"])  # mixed: the extras too
    return {"engines": engines, "prompts": prompts, "held_until_all_arrived": plan["inference"].get("hold_requests"),
            "timing_dependent": engines > 1 and prompts > engines}


def describe_schedule(schedule: dict) -> str:
    """One line for people: what the schedule does in this run."""
    name, submitted = schedule["name"], len(schedule["submit"])
    if not schedule["engine"]:
        return (f"schedule forward: GPTModel forward (training path, no engine) over prompt + generated tokens of "
                f"{schedule['reference']['source']}")
    text = f"schedule {name}: {submitted} request{'s' if submitted != 1 else ''} submitted " + (
        "one at a time, each after the previous finished" if schedule["one_at_a_time"] else "together")
    if schedule.get("mixed"):
        text += (
            f" ({submitted - sum(1 for item in schedule['submit'] if item['request_id'] is not None)} extra prompts "
            f"of {schedule['mixed']['extra_words']} words, seed {schedule['mixed']['seed']}; not written)"
        )
    if schedule["chunked_prefill_tokens"]:
        text += f", chunked prefill at {schedule['chunked_prefill_tokens']} tokens per step"
    return text


def report_ranks(run, plan: dict, wall_s: float) -> dict:
    """Print what the ranks left behind (coordinator, stand-ins, phases, engines, memory); return it for provenance."""
    status = run.rank_status(0)
    network = run.read_network()
    stand_ins = run.read_stand_ins()
    logger.info(f"coordinator {network['coordinator']} | engine sockets on {network['bind_host']}")
    if network.get("coordinator_port_requested"):
        logger.warning(
            f"coordinator port {network['coordinator_port_requested']} was taken; megatron-core chose another"
        )
    for name in stand_ins:
        logger.info(f"stand-in: {name}")
    zygote_s = run.read_zygote().get("prepare_s")
    phases = ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in status["timings_s"].items())
    logger.info(f"ranks finished in {wall_s:.1f} s; zygote start-up {zygote_s or 0:.1f}s; phases (rank 0): {phases}")
    memory = run.memory(plan["world_size"])
    logger.info(f"peak RSS per rank (MiB): {memory['peak_rss_mib_per_rank']}; "
                f"coordinator: {memory['coordinator_peak_rss_mib']}")
    served_by = run.read_served_by()
    engines = sorted(set((served_by or {}).values()))
    logger.info(f"requests served by engine (data-parallel rank): {served_by} "
                f"({len(engines)} of {plan['parallel']['data']} engines served)")
    schedule = run.read_coordinator_schedule()
    if schedule is not None:
        routed = {str(record.get("request_id")): record.get("rank_index") for record in schedule.get("records", [])}
        logger.info(
            f"megatron-core's coordinator schedule: policy {schedule.get('policy')}, request -> engine {routed}"
        )
    network = {**network, "served_by_dp_rank": served_by, "coordinator_schedule": schedule}
    timings = {"zygote_prepare": zygote_s, **status["timings_s"]}
    return {"network": network, "stand_ins": stand_ins, "timings_s": timings, "memory": memory}
