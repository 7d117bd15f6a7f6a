"""What a restore says when the target's server refuses a statement, whoever sent it.

Server messages can quote row values (a duplicate key, an incorrect value): ``withhold_values``
takes them out, so a customer's data never reaches a log. A full disk or tablespace reaches the
client as "The table 't' is full", errno 135 "No more room in record file" or errno 28 (the
server's own log says error 28): ``OUT_OF_SPACE_WORDS`` recognises them, and the message says
the target ran out of space (``out_of_space``). The mysql client echoes the statement it failed
on (an INSERT's rows, a ``BINLOG`` statement's row images): ``redact_client_output`` keeps only
its own message lines.
"""

from __future__ import annotations

import re

OUT_OF_SPACE_WORDS = r"is full|Disk full|Errcode: 28|errno: 28|No space left|No more room|errno: 135"
OUT_OF_SPACE_HINT = "free space on the target (or grow its tablespace), then rerun with --force"
_MESSAGE_LINE = re.compile(r"^(ERROR|WARNING|Warning|mysql:|mariadb:|\S*/mysql:|\S*/mariadb:)")
_QUOTED_VALUES = (  # server messages that quote row values
    re.compile(r"(Duplicate entry )'.*?'( for key)"),
    re.compile(r"(Incorrect \w+ value: )'.*?'( for column)"),
    re.compile(r"(Truncated incorrect \w+ value: )'.*?'()"),
)


def withhold_values(text: str) -> str:
    """``text`` with the row values server messages quote replaced by "(value withheld)"."""
    for pattern in _QUOTED_VALUES:
        text = pattern.sub(r"\1(value withheld)\2", text)
    return text


def out_of_space(label: str, text: str) -> str:
    """The message of a restore whose target (``label``) ran out of space; ``text``: what failed."""
    return f"{label} ran out of space (its disk or tablespace is full): {text}"


def redact_client_output(text: str) -> str:
    """Keep only the mysql client's own message lines (never an echoed statement), values withheld."""
    lines = [withhold_values(line) for line in text.splitlines() if _MESSAGE_LINE.match(line)]
    return "\n".join(lines) or "(no message; the statement it echoed is withheld: it holds row data)"
