"""``deployctl setup-redis``: the admin step that creates the consumer groups."""

from __future__ import annotations

import anyio
import click

from deploystream.cli.app import App


@click.command("setup-redis")
@click.pass_obj
def setup_redis(app: App) -> int:
    """Create the consumer groups (and their streams); idempotent.

    Run with admin credentials in REDIS_URL, before executors and orchestrators
    start: their ACL users may read through the groups but not create them.
    """
    from deploystream.groups import all_groups, create_groups

    async def main() -> int:
        redis = await app.redis()
        try:
            created = await create_groups(redis, app.config)
        finally:
            await redis.aclose()
        for stream, group in all_groups(app.config):
            state = "created" if f"{stream} {group}" in created else "exists"
            click.echo(f"{stream}: group {group} {state}")
        return 0

    return anyio.run(main)
