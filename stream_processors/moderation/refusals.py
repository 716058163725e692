"""What a user reads when input moderation refuses a request: the category in plain words and,
where someone may be in danger, where to find help instead of a bare refusal.

One message per category; ``CHATBUS_MODERATION_REFUSALS`` (a JSON object, category → message)
replaces any of them. The most specific flagged category with the highest score picks the
message; the technical detail (categories and scores) follows it for developers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from chatbus.errors import ConfigurationError
from stream_processors.moderation.categories import ABUSE, CATEGORIES

_HELP = (
    "If you are thinking about harming yourself, you deserve support right now: in the US call "
    "or text 988, in the UK and Ireland call Samaritans on 116 123, in the EU dial 112 in an "
    "emergency, or find a free, confidential line in your country at https://findahelpline.com. "
    "I can also talk with you about what you're going through."
)

DEFAULT_REFUSALS: dict[str, str] = {
    "harassment": "I can't help with this because it insults, bullies or demeans a person.",
    "harassment/threatening": "I can't help with this because it threatens a person.",
    "hate": "I can't help with this because it demeans people for who they are "
    "(their race, religion, origin, gender, sexuality or disability).",
    "hate/threatening": "I can't help with this because it calls for violence against people "
    "for who they are.",
    "illicit": "I can't help with this because it asks for help with something illegal. "
    "I'm glad to help with the legal side: how to protect yourself, or how the law works.",
    "illicit/violent": "I can't help with this because it asks how to make weapons, poisons "
    "or explosives, or how to hurt someone. If someone is in danger, call your local "
    "emergency number.",
    "self-harm": "I can't help with that, and I'm concerned for you. " + _HELP,
    "self-harm/intent": "I'm really sorry you're feeling this way. " + _HELP,
    "self-harm/instructions": "I can't give that information, because it could hurt you. " + _HELP,
    "sexual": "I can't write sexually explicit content.",
    "sexual/minors": "I can't help with anything that sexualises children. If a child is at "
    "risk, contact your local police or a child-protection hotline; abuse images can be "
    "reported to the NCMEC CyberTipline (report.cybertip.org) or the IWF (report.iwf.org.uk).",
    "violence": "I can't help with this because it is about hurting people or animals. "
    "If someone is in danger, call your local emergency number.",
    "violence/graphic": "I can't write graphic descriptions of violence or injury.",
    ABUSE: "This account is temporarily blocked after repeated content policy violations.",
}


def refusal_messages(overrides: Mapping[str, str]) -> dict[str, str]:
    """The message of every category, ``overrides`` applied; raises on an unknown category."""
    unknown = sorted(set(overrides) - set(DEFAULT_REFUSALS))
    if unknown:
        raise ConfigurationError(
            f"CHATBUS_MODERATION_REFUSALS names unknown categories {unknown}; "
            f"known: {', '.join(CATEGORIES)}, {ABUSE}"
        )
    return DEFAULT_REFUSALS | dict(overrides)


#: Categories whose message wins whatever else is flagged: someone may be in danger.
_FIRST = ("self-harm/intent", "self-harm/instructions", "self-harm", "sexual/minors")


def refusal_for(flagged: Sequence[str], messages: Mapping[str, str]) -> str:
    """The message for a refusal whose flagged categories are ``flagged`` (highest score
    first): a self-harm or child-safety category if any, else the highest-scored most
    specific one (``violence/graphic`` before ``violence``)."""
    if not flagged:
        return ""
    urgent = [c for c in _FIRST if c in flagged]
    specific = urgent or [c for c in flagged if "/" in c] or list(flagged)
    return messages.get(specific[0], "I can't help with that request.")
