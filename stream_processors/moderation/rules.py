"""Keyword/regex rules per category: cheap, precise, and explainable.

A rule that matches gives its category a fixed score (``STRONG`` or ``WEAK``); categories no rule
matches score 0. Rules catch unambiguous phrasings; the embedding classifier covers paraphrases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stream_processors.moderation.categories import CATEGORIES, CategoryScores

STRONG = 0.95
WEAK = 0.75

_PEOPLE = (
    r"(?:you|him|her|them|someone|somebody|people|everyone|my (?:boss|wife|husband|"
    r"neighbou?r|teacher|ex|classmate|coworker|family|parents?|brother|sister))"
)
_GROUPS = (
    r"(?:immigrants?|refugees?|foreigners|muslims?|jews?|christians?|gays?|gay people|"
    r"trans(?:gender)? people|black people|white people|asians?|women|minorities|"
    r"that (?:race|religion)|those people)"
)
_MINOR = (
    r"(?:minors?|child(?:ren)?|kids?|underage|under[- ]?(?:1[0-7]|age)|"
    r"(?:[1-9]|1[0-7])[- ]year[- ]old|young teens?|pre-?teens?|schoolgirl|schoolboy)"
)
_GORE = (
    r"(?:injur\w*|wounds?|blood|gore|victim|tortur\w*|beheading|skinned|flesh|"
    r"shooting|corpse|mutilat\w*)"
)
_SEXUAL = r"(?:sex(?:ual|ually|y)?|explicit|erotic|nude|naked|porn\w*|nsfw|lewd)"


@dataclass(frozen=True, slots=True)
class Rule:
    category: str
    pattern: re.Pattern[str]
    score: float = STRONG


def _rule(category: str, pattern: str, score: float = STRONG) -> Rule:
    assert category in CATEGORIES, category
    return Rule(category, re.compile(pattern, re.IGNORECASE), score)


DEFAULT_RULES: tuple[Rule, ...] = (
    # harassment
    _rule(
        "harassment",
        r"\byou(?:'re| are)(?: such| so)? (?:an? )?(?:worthless|pathetic|"
        r"stupid|idiot|loser|moron|useless|disgusting|brainless)\b",
    ),
    _rule("harassment", r"\bnobody (?:likes|loves|will ever love) you\b"),
    _rule(
        "harassment", r"\b(?:insult|humiliate|bully|mock|harass)\w* (?:my|this|the|her|him)\b", WEAK
    ),
    # harassment/threatening
    _rule(
        "harassment/threatening",
        r"\bi(?:'ll| will|'m going to| am going to|'m gonna) "
        r"(?:kill|hurt|beat|find|stab|shoot|break) (?:you|your)\b",
    ),
    _rule(
        "harassment/threatening",
        r"\b(?:watch your back|you'?ll regret it|i'?m coming for "
        r"you|i know where you live)\b",
    ),
    _rule(
        "harassment/threatening",
        r"\bthreat(?:en)?\w* (?:message|note|letter)?\s*(?:to )?"
        r"(?:scare|hurt|my|him|her|them)\b",
        WEAK,
    ),
    # hate
    _rule(
        "hate",
        rf"\b{_GROUPS} (?:are|is) (?:all )?(?:vermin|animals|parasites|subhuman|"
        r"inferior|disgusting|filthy|terrorists|thieves|evil|unnatural)\b",
    ),
    _rule(
        "hate",
        r"\b(?:race|ethnic group|religion) is (?:genetically )?(?:inferior|superior)\b",
        WEAK,
    ),
    # hate/threatening
    _rule(
        "hate/threatening",
        rf"\b(?:exterminate|wipe out|eradicate|round up|kill|shoot) "
        rf"(?:all |every |the )?{_GROUPS}",
    ),
    _rule("hate/threatening", r"\bonly good one of them is a dead one\b"),
    # illicit
    _rule(
        "illicit",
        r"\b(?:make|cook|synthesi[sz]e|produce) (?:meth|methamphetamine|crack|"
        r"cocaine|heroin|fentanyl|lsd)\b",
    ),
    _rule(
        "illicit",
        r"\b(?:launder (?:money|cash)|stolen credit cards?|fake ids?|"
        r"counterfeit (?:money|bills|designer)|phishing email|ransomware)\b",
    ),
    _rule(
        "illicit",
        r"\b(?:hack into|break into) (?:my |his |her |someone'?s? |the )?"
        r"(?:ex'?s?|neighbou?r'?s?|someone|account|email|house|phone)",
        WEAK,
    ),
    _rule("illicit", r"\b(?:shoplift|hotwire|evade taxes|steal (?:someone'?s )?identity)\w*"),
    # illicit/violent
    _rule(
        "illicit/violent",
        r"\b(?:build|make|assemble) (?:an? )?(?:pipe ?bomb|bomb|explosives?|"
        r"molotov(?: cocktail)?|nerve gas|untraceable gun|ghost gun)\b",
    ),
    _rule("illicit/violent", r"\bpoison (?:someone|him|her|them|my)\b|\bput in someone'?s drink\b"),
    _rule("illicit/violent", r"\b(?:kidnap|armed (?:attack|robbery)) ", WEAK),
    # self-harm
    _rule("self-harm", r"\b(?:hurt|harm|cut|burn|starv)\w* myself\b"),
    _rule(
        "self-harm",
        r"\b(?:kill myself|end my life|commit suicide|want to die|end it all|"
        r"better off without me)\b",
    ),
    # self-harm/intent
    _rule(
        "self-harm/intent",
        r"\bi(?:'m| am|'ve)? (?:going to|gonna|planning to|decided to|"
        r"want to) (?:kill myself|end (?:my life|it all)|hurt myself|"
        r"jump off)\b",
    ),
    _rule("self-harm/intent", r"\bi want to die\b"),
    # self-harm/instructions
    _rule(
        "self-harm/instructions",
        r"\b(?:how (?:do i|to|can i)|best way to|easiest way to|"
        r"painless(?:st)? way to|fastest way to) (?:kill myself|"
        r"commit suicide|end my life|hang myself|cut myself|"
        r"overdose)\b",
    ),
    _rule("self-harm/instructions", r"\bhow many (?:\w+ )?pills (?:does it take|to) (?:to )?die\b"),
    # sexual
    _rule(
        "sexual",
        r"\b(?:explicit|erotic|x-rated|nsfw|steamy|lewd) (?:sex )?(?:scene|story|"
        r"content|roleplay|fanfic|poem|encounter|messages)\b",
    ),
    _rule("sexual", r"\b(?:write|send) me (?:some )?porn\b|\btalk dirty\b|\bsexting\b"),
    # sexual/minors
    _rule("sexual/minors", rf"\b{_SEXUAL}\b[^.?!]{{0,60}}\b{_MINOR}\b"),
    _rule("sexual/minors", rf"\b{_MINOR}\b[^.?!]{{0,60}}\b{_SEXUAL}\b"),
    # violence
    _rule("violence", rf"\b(?:kill|murder|stab|shoot|torture|beat|punch)\w* {_PEOPLE}\b", WEAK),
    _rule("violence", r"\b(?:mass shooting|school shooter|terrorist attack)\b", WEAK),
    # violence/graphic
    _rule("violence/graphic", r"\b(?:gory|gruesome)\b|\bblood and guts\b|\bdismember\w*\b"),
    _rule("violence/graphic", rf"\bgraphic\w*\b[^.?!]{{0,60}}\b{_GORE}\b"),
    _rule("violence/graphic", rf"\b{_GORE}\b[^.?!]{{0,60}}\bgraphic\w*"),
)


class RuleClassifier:
    """Scores from the rules alone (a :class:`~stream_processors.moderation.Classifier`)."""

    name = "rules"

    def __init__(self, rules: tuple[Rule, ...] = DEFAULT_RULES) -> None:
        self._rules = rules

    def classify(self, text: str) -> CategoryScores:
        scores = dict.fromkeys(CATEGORIES, 0.0)
        for rule in self._rules:
            if scores[rule.category] < rule.score and rule.pattern.search(text):
                scores[rule.category] = rule.score
        return scores

    def matches(self, text: str) -> list[Rule]:
        """The rules that match ``text`` (to explain a verdict)."""
        return [r for r in self._rules if r.pattern.search(text)]
