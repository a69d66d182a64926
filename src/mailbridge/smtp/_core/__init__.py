"""The SMTP client protocol without I/O: bytes in, replies and settled messages out.

No sockets, threads, clocks or time-outs live here; the sync layer
(`connection.py`, `pipeline.py`) and the asyncio layer drive it. Layout:

* `_replies`: `ReplyReader`, the incremental, bounded reply parser;
* `_framing`: command lines and DATA/BDAT payloads;
* `_session`: greeting, EHLO, STARTTLS and AUTH (`_auth`) as exchanges;
* `_plan`: one transaction (`Attempt`), built and judged;
* `_pipeline`: `TransactionQueue`, the transactions on one connection and
  which reply belongs to which.
"""

from ._auth import OAUTH_MECHANISMS, choose_mechanism, oauth_initial_response
from ._framing import check_command, frame_data, normalize_data
from ._pipeline import Outgoing, TransactionQueue
from ._plan import Attempt, Stage, check_not_closing, plan_attempt
from ._replies import MAX_REPLY_LINE, MAX_REPLY_LINES, ReplyReader
from ._session import (
    Command,
    Exchange,
    command_exchange,
    ehlo_exchange,
    judge_greeting,
    login_exchange,
    parse_ehlo,
    starttls_exchange,
)

__all__ = [
    "MAX_REPLY_LINE",
    "MAX_REPLY_LINES",
    "OAUTH_MECHANISMS",
    "Attempt",
    "Command",
    "Exchange",
    "Outgoing",
    "ReplyReader",
    "Stage",
    "TransactionQueue",
    "check_command",
    "check_not_closing",
    "choose_mechanism",
    "command_exchange",
    "ehlo_exchange",
    "frame_data",
    "judge_greeting",
    "login_exchange",
    "normalize_data",
    "oauth_initial_response",
    "parse_ehlo",
    "plan_attempt",
    "starttls_exchange",
]
