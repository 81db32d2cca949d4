"""Ctrl-C while following a request: the request goes on unless asked to stop.

A job on the stream does not belong to this terminal: stopping to watch it must
not stop it, and must not pretend to. The first Ctrl-C stops following and says
so plainly, with the commands that follow or cancel the request; a second Ctrl-C
within :data:`SECOND_CTRL_C_S` seconds (or ``--cancel-on-interrupt``) cancels it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable

import anyio
import click

from orchestrator.client import StreamClient

# How long a second Ctrl-C still cancels the request, in seconds.
SECOND_CTRL_C_S = 5.0
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

CANCEL_ON_INTERRUPT_OPT = click.option(
    "--cancel-on-interrupt",
    is_flag=True,
    envvar="DEPLOYSTREAM_CANCEL_ON_INTERRUPT",
    show_envvar=True,
    help="Ctrl-C cancels the request instead of leaving it running.",
)


def _say(text: str) -> None:
    click.echo(text, err=True)


async def _cancel(client: StreamClient, request_id: str) -> int:
    reason = f"Ctrl-C in deployctl (pid {os.getpid()})"
    if await client.cancel(request_id, reason):
        _say(f"canceled request {request_id} (its run is stopped wherever it is)")
    else:
        _say(f"request {request_id} had already finished; nothing to cancel")
    return EXIT_INTERRUPTED


async def follow_interruptibly(
    client: StreamClient,
    current: Callable[[], str],
    work: Callable[[], Awaitable[int]],
    *,
    cancel_on_interrupt: bool,
) -> int:
    """Run ``work`` (which follows the request ``current()`` names) and handle Ctrl-C."""
    code: int | None = None
    with anyio.open_signal_receiver(signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                nonlocal code
                code = await work()
                tg.cancel_scope.cancel()

            tg.start_soon(run)
            async for _ in signals:
                tg.cancel_scope.cancel()  # stop following (and the live view)
                break
        if code is not None:
            return code
        request_id = current()
        if not await client.exists(request_id):
            _say("interrupted before the request was submitted: nothing submitted")
            return EXIT_INTERRUPTED
        if cancel_on_interrupt:
            return await _cancel(client, request_id)
        _say(f"interrupted: request {request_id} goes on (it was not canceled)")
        _say(f"  follow it: deployctl tail {request_id}")
        _say(f"  cancel it: deployctl cancel {request_id}")
        _say(f"press Ctrl-C again within {SECOND_CTRL_C_S:g} s to cancel it now")
        with anyio.move_on_after(SECOND_CTRL_C_S):
            async for _ in signals:
                return await _cancel(client, request_id)
    return EXIT_INTERRUPTED
