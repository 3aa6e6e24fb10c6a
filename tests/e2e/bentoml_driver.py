"""Drive a raytask app with BentoML's own HTTP clients (run by the bentoml virtualenv).

python bentoml_driver.py URL [TOKEN]    -> prints one JSON object of observations

With a TOKEN, both clients get it as BentoML's own ``token=`` (sent as a bearer token).
"""

import asyncio
import json
import sys
import time

import bentoml

URL = sys.argv[1]
TOKEN = sys.argv[2] if len(sys.argv) > 2 else None


def wait_sync(task, want):
    deadline = time.monotonic() + 60
    while (status := task.get_status().value) != want:
        assert status in ("pending", "in_progress"), status
        assert time.monotonic() < deadline, f"still {status}"
        time.sleep(0.1)
    return status


async def wait_async(task, want):
    deadline = time.monotonic() + 60
    while (status := (await task.get_status()).value) != want:
        assert status in ("pending", "in_progress"), status
        assert time.monotonic() < deadline, f"still {status}"
        await asyncio.sleep(0.1)
    return status


def sync_session():
    seen = {}
    client = bentoml.SyncHTTPClient(URL, token=TOKEN)
    client._opened_files = []  # BentoML 1.4.40's sync submit() needs it (its own bug)
    task = client.wordcount.submit(text="to be or not to be", top=2)
    seen["first_status"] = task.get_status().value
    seen["status"] = wait_sync(task, "completed")
    seen["result"] = task.get()
    slow = client.block.submit(seconds=60)
    wait_sync(slow, "in_progress")
    slow.cancel()
    seen["cancelled"] = slow.get_status().value
    failing = client.fail.submit(message="bento")
    seen["failed"] = wait_sync(failing, "failed")
    again = failing.retry()
    seen["retry_new_id"] = again.id != failing.id
    seen["retried"] = wait_sync(again, "failed")
    seen["describe"] = client.describe(prompt="from bentoml")
    client.close()
    return seen


async def async_session():
    seen = {}
    async with bentoml.AsyncHTTPClient(URL, token=TOKEN) as client:
        return await async_calls(client, seen)


async def async_calls(client, seen):
    task = await client.wordcount.submit(text="a a b", top=1)
    seen["status"] = await wait_async(task, "completed")
    seen["result"] = await task.get()
    slow = await client.block.submit(seconds=60)
    await wait_async(slow, "in_progress")
    await slow.cancel()
    seen["cancelled"] = (await slow.get_status()).value
    failing = await client.fail.submit(message="bento")
    seen["failed"] = await wait_async(failing, "failed")
    again = await failing.retry()
    seen["retry_new_id"] = again.id != failing.id
    seen["retried"] = await wait_async(again, "failed")
    return seen


print(
    json.dumps(
        {
            "version": bentoml.__version__,
            "sync": sync_session(),
            "async": asyncio.run(async_session()),
        }
    )
)
