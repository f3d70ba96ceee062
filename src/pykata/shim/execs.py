"""Task verbs of processes and their stdio: Exec (a process added to a task, started by
Start), ResizePty, CloseIO.
"""

from __future__ import annotations

import logging

from google.protobuf import empty_pb2

from pykata.domain import ids
from pykata.protocol.pb import events_pb2 as ev
from pykata.protocol.pb import shim_pb2 as pb
from pykata.shim.core import ServiceCore
from pykata.shim.tasks import RUNNING, Proc, Stdio

log = logging.getLogger(__name__)



class ExecVerbs(ServiceCore):
    async def Exec(self, r: pb.ExecProcessRequest) -> empty_pb2.Empty:
        task = self.tasks.get("Exec", r.id)
        ids.check_id("exec id", r.exec_id)
        task.init.require("Exec", RUNNING)
        proc = Proc(r.id, r.exec_id, Stdio(r.stdin, r.stdout, r.stderr, r.terminal),
                    spec_json=r.spec.value)
        task.add_exec("Exec", proc)
        self.events.publish("/tasks/exec-added",
                            ev.TaskExecAdded(container_id=r.id, exec_id=r.exec_id))
        return empty_pb2.Empty()

    async def ResizePty(self, r: pb.ResizePtyRequest) -> empty_pb2.Empty:
        proc = self.tasks.get("ResizePty", r.id).process("ResizePty", r.exec_id)
        if proc.stdio.terminal and not proc.exited.is_set():
            await self._agent("ResizePty").tty_win_resize(r.id, r.exec_id, r.height, r.width)
        return empty_pb2.Empty()

    async def CloseIO(self, r: pb.CloseIORequest) -> empty_pb2.Empty:
        self.tasks.get("CloseIO", r.id).process("CloseIO", r.exec_id)
        relay = self._relays.get((r.id, r.exec_id))
        if r.stdin and relay is not None:
            relay.close_stdin()
        return empty_pb2.Empty()
