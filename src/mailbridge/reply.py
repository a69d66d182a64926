"""The parsed form of an SMTP reply (RFC 5321 section 4.2, RFC 3463 status codes)."""

from __future__ import annotations

import re

import attrs

__all__ = ["SmtpReply"]

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")


@attrs.frozen
class SmtpReply:
    """One SMTP reply: `code` (e.g. 550), `enhanced_status` (e.g. "5.1.1" or None) and `text`.

    `text` joins the lines of a multi-line reply with newlines; the enhanced
    status code, when the server sent one, is removed from each line.
    """

    code: int
    enhanced_status: str | None = None
    text: str = ""

    @classmethod
    def parse(cls, code: int, lines: list[str]) -> SmtpReply:
        """Build a reply from its code and the text of each line (without "250-")."""
        enhanced: str | None = None
        texts = []
        klass = str(code)[0]
        for line in lines:
            # The class digit and a dot first: most lines have no status (and a regex
            # per line is most of what parsing a reply costs).
            match = _ENHANCED.match(line) if line[:1] == klass and line[1:2] == "." else None
            if match:
                enhanced = enhanced or f"{match.group(1)}.{match.group(2)}.{match.group(3)}"
                texts.append(line[match.end() :])
            else:
                texts.append(line)
        # Lines are kept as lines (an EHLO reply's first line may be empty).
        return cls(code, enhanced, "\n".join(text.strip() for text in texts))

    @property
    def is_temporary(self) -> bool:
        """4xx: the same command may succeed later."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """5xx: repeating the command unchanged will fail again."""
        return self.code >= 500

    @property
    def closes_connection(self) -> bool:
        """421: the server is closing the transmission channel."""
        return self.code == 421

    def __str__(self) -> str:
        parts = [str(self.code)]
        if self.enhanced_status:
            parts.append(self.enhanced_status)
        if self.text:
            parts.append(self.text.replace("\n", " / "))
        return " ".join(parts)
