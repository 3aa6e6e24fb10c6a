"""Mutation checks, run by hand: ``.venv/bin/python -m tests.mutants`` (about 3 minutes).

Each mutant deletes or bends one check the trust issue asked for; the fast tests named with
it must fail on it (KILLED). The file is restored after each run. A SURVIVED line means a
check that no fast test guards: write the test.
"""

import pathlib
import subprocess
import sys

M = [
    (
        "raytask/core/table.py",
        "self._queue(record, front=record.attempts > 0)",
        "self._queue(record, front=False)",
        "tests/unit/test_table.py",
    ),
    (
        "raytask/core/table.py",
        "            owner=original.owner,\n",
        "",
        "tests/unit/test_table.py",
    ),
    (
        "raytask/core/index.py",
        "oldest = min(self._records[task_id].created_at",
        "oldest = max(self._records[task_id].created_at",
        "tests/unit/test_table.py",
    ),
    (
        "raytask/core/dispatcher.py",
        "spread = -(-len(started) // replicas)",
        "spread = len(started) // replicas",
        "tests/unit/test_dispatcher.py",
    ),
    (
        "raytask/core/recovery.py",
        "if record.endpoint in known and record.options.rerun_lost_results:",
        "if record.options.rerun_lost_results:",
        "tests/unit/test_recovery.py",
    ),
    (
        "raytask/server/service.py",
        "            task_ids = [t for t in task_ids if self.table.owner_of(t) == owner]\n",
        "",
        "tests/http",
    ),
    (
        "raytask/core/webhooks.py",
        "    return address.is_global and not address.is_multicast",
        "    return not address.is_private and not address.is_multicast",
        "tests/unit/test_webhooks.py",
    ),
    (
        "raytask/core/webhooks.py",
        'if host == "localhost" or host.endswith(".localhost"):',
        'if host == "localhost":',
        "tests/unit/test_webhooks.py",
    ),
    (
        "raytask/server/stores.py",
        '                for suffix in ("", ":results", ":inputs"):',
        '                for suffix in ("",):',
        "tests/unit/test_recovery.py",
    ),
    (
        "raytask/server/guard.py",
        "    if origin is not None and origin_key(origin) not in allowed:",
        "    if False:",
        "tests/http/test_guard.py",
    ),
    (
        "raytask/server/guard.py",
        "    if has_body and not (_is_json(",
        "    if False and not (_is_json(",
        "tests/http/test_guard.py",
    ),
    (
        "raytask/server/journal.py",
        "        if hmac.compare_digest(tag, self._tag(task_id, kind, payload)):",
        "        if True:",
        "tests/unit/test_recovery.py",
    ),
    (
        "raytask/core/messages.py",
        "    owned = isinstance(answer, TaskState | TaskRecord | TaskExpiredError)",
        "    owned = isinstance(answer, TaskState | TaskRecord)",
        "tests/http/test_tokens.py",
    ),
    (
        "raytask/server/routes.py",
        "            task_id = None  # a caller's text never reaches the log (no forged lines)",
        "            pass",
        "tests/http/test_routes.py",
    ),
    (
        "raytask/server/webhooks.py",
        "        target = httpx.URL(url).copy_with(host=str(address))",
        "        target = httpx.URL(url)",
        "tests/unit/test_webhooks.py",
    ),
    (
        "raytask/core/table.py",
        "        if len(self._records) + count > self.max_tasks:",
        "        if False:",
        "tests/unit/test_table.py",
    ),
    (
        "raytask/core/config.py",
        "        if options.ttl_s is not None and options.ttl_s > self.max_ttl_s:",
        "        if False:",
        "tests/http/test_routes.py",
    ),
    (
        "raytask/server/manager.py",
        "                routes, config, models = saved",
        "                pass",
        "tests/unit/test_recovery.py",
    ),
    (
        "raytask/server/journal.py",
        "            None if record.inputs_journaled else seal(",
        "            None if False else seal(",
        "tests/unit/test_journal.py",
    ),
    (
        "raytask/core/record.py",
        "        if not can_transition(self.status, target, recovering):",
        "        if not can_transition(self.status, target, True):",
        "tests/unit/test_recovery.py",
    ),
    (
        "raytask/core/table.py",
        "                record.result, record.result_bytes = result, result.size",
        "                record.result_bytes = result.size",
        "tests/http",
    ),
    (
        "raytask/core/messages.py",
        "    if owner is not None and owned and answer.owner != owner:",
        "    if False:",
        "tests/http",
    ),
    (  # delete_many: an unfinished task is never deleted
        "raytask/core/table.py",
        "            if record is not None and record.status.finished:\n                self._drop(record)\n                deleted",
        "            if record is not None:\n                self._drop(record)\n                deleted",
        "tests/unit/test_delete.py",
    ),
    (  # delete_many: another owner's task is skipped
        "raytask/server/service.py",
        "            record = self._visible(task_id, owner, endpoint)\n        except HTTPError:",
        "            record = self._visible(task_id, None, endpoint)\n        except HTTPError:",
        "tests/unit/test_delete.py",
    ),
    (  # a deleted task leaves no tombstone: its id answers 404, not 410
        "raytask/core/table.py",
        "                self._drop(record)\n                deleted.append(task_id)",
        "                self._drop(record)\n                self._tombstones[task_id] = None\n                deleted.append(task_id)",
        "tests/unit/test_delete.py",
    ),
    (  # a wrong method on a known route is 405, not 404
        "raytask/server/misses.py",
        "        if allowed:\n            return self._not_allowed",
        "        if False:\n            return self._not_allowed",
        "tests/http/test_routes.py",
    ),
    (  # the failure log says "will retry" only when the task was requeued
        "raytask/server/streams.py",
        "    elif record.status is TaskStatus.PENDING and record.attempts and record.error:",
        "    elif record.attempts and record.error:",
        "tests/unit/test_manager.py",
    ),
    (  # a journal group holds only the chunks since the last write
        "raytask/core/chunks.py",
        "        first = max(self.journaled, 0)\n",
        "        first = 0\n",
        "tests/unit/test_chunks.py",
    ),
    (  # ... because the journal moves the mark once a write is in
        "raytask/server/journal.py",
        "                for log, end in logs:\n                    log.journaled = end\n",
        "",
        "tests/unit/test_recovery.py",
    ),
    (  # streamed chunks count against max_task_bytes
        "raytask/core/table.py",
        "        self.held_bytes += sum(map(len, encoded))",
        "        pass",
        "tests/unit/test_table.py",
    ),
    (  # a reader resuming an attempt that is gone gets a reset first
        "raytask/server/events.py",
        "if read.attempt and attempt and read.attempt != attempt:",
        "if False:",
        "tests/http/test_streams.py",
    ),
    (  # a restarted job never feeds a line its progress says is finished
        "raytask/server/jobs.py",
        "            if run.is_done(number):\n                continue\n",
        "",
        "tests/http/test_batches.py",
    ),
    (  # ... and cuts its output back to what that progress counted
        "raytask/server/jobstate.py",
        '            info = FileInfo(**{**info, "bytes": kept})',
        "            pass",
        "tests/unit/test_joblines.py",
    ),
    (  # a line's task leaves the table once its line is written
        "raytask/server/jobs.py",
        "            self.service.table.delete(r.task_id for r in records)\n",
        "",
        "tests/http/test_batches.py",
    ),
    (  # line tasks are never journaled
        "raytask/server/service.py",
        "        else:  # (a batch line's state is read from the manager, never from a copy)",
        "        if True:",
        "tests/http/test_batches.py",
    ),
    (  # a deleted task's expiry does not stay in the heap
        "raytask/core/table.py",
        "        if len(self._expiries) > 2 * len(self._records) + 1024:",
        "        if False:",
        "tests/unit/test_delete.py",
    ),
    # -- tenants (issue 27) --
    (  # the lane's virtual time follows the tasks taken (a newcomer waits one turn)
        "raytask/core/queue.py",
        "        if taken:\n            self._vtime = max(self._vtime, key[0])\n",
        "",
        "tests/unit/test_fair_queue.py",
    ),
    (  # an idle tenant banks no turns
        "raytask/core/queue.py",
        "            del self._tenants[tenant], self._last[tenant]",
        "            del self._tenants[tenant]",
        "tests/unit/test_fair_queue.py",
    ),
    (  # a tenant at max_running is passed over
        "raytask/core/table.py",
        "task_id = queue.peek(self.quotas.capped)",
        "task_id = queue.peek()",
        "tests/unit/test_tenants.py",
    ),
    (  # max_pending
        "raytask/core/tenants.py",
        "if limit is not None and self.pending[tenant] + count > limit:",
        "if limit is not None and self.pending[tenant] > limit:",
        "tests/unit/test_tenants.py",
    ),
    (  # the bucket holds at most twice the rate
        "raytask/core/tenants.py",
        "tokens = min(burst, tokens + max(0.0, now - at) * rate)",
        "tokens = tokens + max(0.0, now - at) * rate",
        "tests/unit/test_tenants.py",
    ),
    (  # with isolation a tenant reads its own usage only
        "raytask/server/routes.py",
        "            query = dataclasses.replace(query, tenant=caller.tenant)\n",
        "",
        "tests/http/test_tenants.py",
    ),
    (  # usage rows go with the task rows that finish them
        "raytask/server/journal.py",
        "                usage = self._usage_changes()",
        "                usage = EMPTY_USAGE",
        "tests/unit/test_recovery.py",
    ),
    (  # a cancel is acknowledged once every copy holds it
        "raytask/server/service.py",
        "        await self.feed.synced()  # every replica's copy holds it before the answer\n",
        "",
        "tests/http/test_copies.py",
    ),
    (  # a delete too
        "raytask/server/service.py",
        "        await self.feed.synced()  # and from every replica's copy\n",
        "",
        "tests/http/test_copies.py",
    ),
    (  # a copy answers only within its lease
        "raytask/core/copy.py",
        "        if entry is None or not self.current:",
        "        if entry is None:",
        "tests/unit/test_feed.py",
    ),
    (  # after a direct answer, no older group's state
        "raytask/core/copy.py",
        "            if fence > self._applied:",
        "            if fence > self._applied + 1:",
        "tests/unit/test_feed.py",
    ),
    (  # a silent copy is dropped, never waited for without end
        "raytask/core/feed.py",
        "                del self._subscribers[name]\n",
        "                pass\n",
        "tests/unit/test_feed.py",
    ),
    (  # a restarted manager waits out the copies of the one before it
        "raytask/core/feed.py",
        "        if quiet > 0:",
        "        if quiet > 60:",
        "tests/unit/test_feed.py",
    ),
    (  # pending tasks' answers are the manager's (their queue position)
        "raytask/core/copy.py",
        "        if entry is None or entry.state.status is TaskStatus.PENDING:",
        "        if entry is None:",
        "tests/unit/test_feed.py",
    ),
    (  # a copy is sent nothing the journal does not hold yet
        "raytask/server/service.py",
        "            await self.journal.flush()  # (it fails the poll if the write fails)\n",
        "            pass\n",
        "tests/unit/test_copied_streams.py",
    ),
    (  # a lost answer's chunks are sent again
        "raytask/core/feed.py",
        "            held.sent.clear()\n",
        "            pass\n",
        "tests/unit/test_copied_streams.py",
    ),
    (  # a copy behind a stream reader tells it nothing older
        "raytask/core/copy.py",
        "            (attempt is not None and current < attempt)",
        "            (attempt is not None and current < attempt and False)",
        "tests/unit/test_copied_streams.py",
    ),
]
results = []
ROOT = pathlib.Path(__file__).resolve().parents[1]
for path, old, new, tests in M:
    p = ROOT / path
    src = p.read_text()
    assert src.count(old) == 1, (path, old)
    p.write_text(src.replace(old, new))
    try:
        command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", tests]
        rc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True).returncode
    finally:
        p.write_text(src)
    results.append(rc != 0)
    print("KILLED" if rc else "SURVIVED", path, "|", old.strip()[:70], flush=True)
sys.exit(0 if all(results) else 1)
