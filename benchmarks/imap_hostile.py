"""InboxImporter.fetch() against a hostile IMAP server: peak memory and wall time.

Each scenario runs in a fresh Python process (so peak RSS is its own) against a
scripted single-connection server on loopback (HostileImapServer, in the same
process; it sends from one reused buffer). The message has one 40-byte PDF
part; the server then misbehaves while the importer downloads it:

* literal-137mb: the part comes as a 137 MB literal (sent in full if read)
* literal-2gb: a literal announced as 2 GB, of which 200 MB are sent
* literal-60mb: a 60 MB literal, under the connection's default cap (64 MiB) but over
  the importer's (twice its 4 MiB download window)
* trickle: a 100-byte literal, one byte every 2 s
* untagged-flood: untagged "* OK" lines without end (at most 10 million)

    python benchmarks/imap_hostile.py [--scenario NAME ...]

Prints one line per scenario: wall time, peak RSS, and the error the importer
raised. The limits are the library's defaults (ImapLimits(): 64 MiB literals,
100,000 lines and 256 MiB per command, 60 s per command; 30 s per read; the importer
caps literals at twice its 4 MiB download window plus 64 KiB).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from mailbridge.imap import InboxImporter
from mailbridge.testing._imap_hostile import HostileImapServer, Peer

MB = 1000 * 1000
CHUNK = b"x" * (1024 * 1024)
STRUCTURE = (
    b'* 1 FETCH (UID 1 RFC822.SIZE 400 BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") '
    b'NIL NIL "7bit" 10 1 NIL NIL NIL NIL)("application" "pdf" ("name" "a.pdf") NIL NIL '
    b'"base64" 40 NIL ("attachment" ("filename" "a.pdf")) NIL NIL) "mixed" ("boundary" "b") '
    b'NIL NIL NIL) ENVELOPE (NIL "Invoice" (("A" NIL "a" "example.test")) NIL NIL NIL NIL '
    b"NIL NIL NIL))\r\n"
)
SERVER_SECONDS = 200.0  # the scripted server gives up after this
SCENARIOS = ("literal-137mb", "literal-2gb", "literal-60mb", "trickle", "untagged-flood")


def _hostile_part(scenario: str) -> tuple[bytes, bytes, int, float]:
    """(announcement, chunk, how many chunks, pause) for the part's download."""
    if scenario == "literal-137mb":
        return b"* 1 FETCH (UID 1 BODY[2] {%d}\r\n" % (137 * MB), CHUNK, 137 * MB // len(CHUNK), 0
    if scenario == "literal-2gb":
        return b"* 1 FETCH (UID 1 BODY[2] {%d}\r\n" % (2000 * MB), CHUNK, 200 * MB // len(CHUNK), 0
    if scenario == "literal-60mb":
        return b"* 1 FETCH (UID 1 BODY[2] {%d}\r\n" % (60 * MB), CHUNK[:MB], 60, 0
    if scenario == "trickle":
        return b"* 1 FETCH (UID 1 BODY[2] {100}\r\n", b"J", 100, 2.0
    return b"", b"* OK still here\r\n" * 1000, 10_000, 0


def run_one(scenario: str) -> None:
    head, chunk, times, pause = _hostile_part(scenario)

    def fetch(peer: Peer, tag: bytes) -> None:
        if b"BODYSTRUCTURE" in peer.line:
            peer.send(STRUCTURE + tag + b" OK done\r\n")
        elif peer.send(head) and peer.stream(chunk, times=times, pause=pause) == times:
            peer.send(b")\r\n" + tag + b" OK done\r\n")

    server = HostileImapServer({"UID FETCH": fetch}, timeout=SERVER_SECONDS)
    with server:
        settings = server.settings(command_timeout=30.0)
        importer = InboxImporter(settings, max_part_bytes=25 * 1024 * 1024)
        started = time.monotonic()
        try:
            batch = importer.fetch()
            outcome = f"no error ({len(batch.documents)} documents, problems {batch.problems})"
        except Exception as exc:  # the benchmark reports whatever came out
            outcome = f"{type(exc).__name__}: {exc}"[:150]
        elapsed = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{scenario:15} {elapsed:8.3f} s  peak RSS {peak_mb:6.1f} MB  {outcome}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", nargs="*", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.child)
        return
    for scenario in args.scenario:
        command = [sys.executable, __file__, "--child", scenario]
        subprocess.run(command, check=False, timeout=SERVER_SECONDS + 60)


if __name__ == "__main__":
    main()
