"""Read the history of a local (offline) wandb run from its ``.wandb`` file.

The file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of records, each with a
7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) and a protobuf payload.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768


def read_payloads(path: Path) -> list[bytes]:
    data = path.read_bytes()
    pos, payloads, pending = 7, [], b""
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            payloads.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            payloads.append(pending + chunk)
    return payloads


def history(path: Path) -> list[dict[str, object]]:
    rows = []
    for payload in read_payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows
